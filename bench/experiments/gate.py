"""Rank-level rules and a vocabulary gate on top of the default hybrid; nDCG@10.

    python -m bench.experiments.gate combine bench/out/combined SCIFACT \
        tests/fixtures/news_shipped bench/out/news_lee bench/out/news_lee_paraphrase
    python -m bench.experiments.gate run SCIFACT tests/fixtures/news_shipped \
        bench/out/news_lee bench/out/news_lee_paraphrase bench/out/combined

SCIFACT: a BEIR-layout folder such as SciFact.

`combine` writes one BEIR folder holding every set's corpus (sets sharing a corpus file share it)
and every set's questions, ids prefixed by the set's position (q0-, q1-, ...): each question is
then asked against all the corpora at once (10,036 passages), a larger and mixed vocabulary. `run`
prints, per set, the rules below; on the combined folder one column per prefix. The combined
corpus is embedded on the first run and cached by `corpus-bot eval` afterwards.

Rules, each over the same per-question scores as fusion.py:
- a length prior: + g × log(passage tokens / mean);
- rank-level: the vectors' top passage placed at rank <= r, or put first when the hybrid score of
  the two differs by <= d, and reciprocal-rank fusion of the vector and default rankings;
- absent words: a question word the model reads whole (search.word_weights) that no passage uses
  is taken as a sign the question is phrased in other words than the corpus: its idf added to the
  coverage's denominator (× lam), or the keyword weight set to lo for that question.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
from pathlib import Path

import numpy as np

from embeddings.evaluate import load_beir
from embeddings.metrics import ndcg_at
from embeddings.search import fts_terms

from .common import SETS_HELP, full_model_sets
from .fusion import missed, rank_documents, term_scores
from .signals import default, passage_lengths

BETA, EXPONENT = 0.225, 5  # the default rule (signals.default)


def combine(out: Path, folders: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    corpus_tag: dict[str, str] = {}  # corpus file content -> the prefix its ids got
    with (
        open(out / "corpus.jsonl", "w") as corpus,
        open(out / "queries.jsonl", "w") as queries,
        open(out / "qrels.tsv", "w") as qrels,
    ):
        qrels.write("query-id\tcorpus-id\tscore\n")
        for n, folder in enumerate(map(Path, folders)):
            text = (folder / "corpus.jsonl").read_text()
            if text not in corpus_tag:
                corpus_tag[text] = f"c{n}"
                for line in text.splitlines():
                    doc = json.loads(line)
                    corpus.write(json.dumps({**doc, "_id": f"c{n}-{doc['_id']}"}) + "\n")
            data = load_beir(folder)
            for qid in data.qrels:  # only the judged questions, as eval asks them
                queries.write(json.dumps({"_id": f"q{n}-{qid}", "text": data.queries[qid]}) + "\n")
                for doc, grade in data.qrels[qid].items():
                    qrels.write(f"q{n}-{qid}\t{corpus_tag[text]}-{doc}\t{grade}\n")


def absent_words_read_whole(q) -> int:
    """How many of the question's words the model reads whole and no passage uses."""
    return sum(1 for scores, blind, _ in q["terms"] if not scores.any() and not blind)


def ranks(scores):
    out = np.empty(len(scores))
    out[np.argsort(-scores, kind="stable")] = np.arange(len(scores))
    return out


def length_prior(g):
    return lambda q: default(q) + g * np.log(q["lengths"] / q["lengths"].mean())


def vector_top_at(r):
    def rule(q):
        s = default(q).copy()
        v = int(np.argmax(q["cos"]))
        order = np.argsort(-s, kind="stable")
        if ranks(s)[v] > r - 1:
            s[v] = s[order[r - 1]] + 1e-6
        return s

    return rule


def vector_top_first_within(d):
    def rule(q):
        s = default(q).copy()
        h, v = int(np.argmax(s)), int(np.argmax(q["cos"]))
        if h != v and s[v] >= s[h] - d:
            s[v] = s[h] + 1e-6
        return s

    return rule


def rrf_vector_default(w, k):
    return lambda q: w / (k + ranks(q["cos"])) + (1 - w) / (k + ranks(default(q)))


def absent_in_denominator(lam):
    def rule(q):
        extra = lam * absent_words_read_whole(q) * np.log(2 * len(q["cos"]) + 1)  # FTS5's idf of a word in no passage
        return missed(q["cos"], q["terms"], q["idf"] + extra, BETA, EXPONENT)

    return rule


def absent_gate(lo):
    return lambda q: missed(q["cos"], q["terms"], q["idf"], lo if absent_words_read_whole(q) else BETA, EXPONENT)


RULES = {"vector only": lambda q: q["cos"], "the default without the gate": default}
RULES.update({f"+ {g} x log(length / mean)": length_prior(g) for g in (-0.02, -0.01, 0.01, 0.02)})
RULES.update({f"vector top passage at rank <= {r}": vector_top_at(r) for r in (1, 2, 3)})
RULES.update({f"vector top passage first if within {d}": vector_top_first_within(d) for d in (0.01, 0.02, 0.05)})
RULES.update({f"RRF(vector, default) w {w} k {k}": rrf_vector_default(w, k) for w in (0.2, 0.5) for k in (5, 60)})
RULES.update({f"absent word idf in denominator x {lam}": absent_in_denominator(lam) for lam in (0.25, 0.5, 1.0)})
RULES.update(
    {f"keyword weight {lo} if a word read whole is absent (0: the default)": absent_gate(lo) for lo in (0.0, 0.05, 0.1)}
)


def run(folders: list[str]) -> None:
    for embedder, data, path, index in full_model_sets(folders):
        conn = sqlite3.connect(path)
        lengths = passage_lengths(conn, index)
        every_vector = index.vectors.get(np.arange(index.passage_count))
        qids = list(data.qrels)
        qvectors = embedder.encode([data.queries[q] for q in qids])
        per_q = [
            {
                "cos": every_vector @ qvectors[i],
                "lengths": lengths,
                "terms": term_scores(index, data.queries[q], embedder, every_vector),
                "idf": index.idf_sum(fts_terms(data.queries[q])),
            }
            for i, q in enumerate(qids)
        ]
        combined = all(re.match(r"q\d+-", q) for q in qids)
        groups = sorted({q.split("-")[0] + "-" for q in qids}, key=lambda g: int(g[1:-1])) if combined else [""]
        gated = [
            sum(absent_words_read_whole(q) > 0 for q, qid in zip(per_q, qids) if qid.startswith(g)) for g in groups
        ]
        print(
            f"\n{data.name}: {len(qids)} queries, {index.passage_count} passages; questions with an absent "
            f"word read whole: {' / '.join(map(str, gated))}; columns: {' '.join(groups) or 'all'}"
        )
        for name, rule in RULES.items():
            scores = {g: [] for g in groups}
            for qid, q in zip(qids, per_q):
                g = next(g for g in groups if qid.startswith(g))
                scores[g].append(ndcg_at(rank_documents(index, rule(q), 10), data.qrels[qid], 10))
            print(f"  {name:<52}" + " ".join(f"{np.mean(scores[g]):.3f}" for g in groups), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    combined = commands.add_parser("combine", help="write one BEIR folder holding every set")
    combined.add_argument("out", type=Path, help="the folder to write, e.g. bench/out/combined")
    combined.add_argument("folders", nargs="+", help=SETS_HELP)
    commands.add_parser("run", help="print each rule's nDCG@10 per set").add_argument(
        "folders", nargs="+", help=SETS_HELP
    )
    args = parser.parse_args()
    if args.command == "combine":
        combine(args.out, args.folders)
    else:
        run(args.folders)


if __name__ == "__main__":
    main()
