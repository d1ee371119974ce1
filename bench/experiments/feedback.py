"""Pseudo-relevance feedback on the keyword side, on top of the hybrid without it (the default's own
feedback, which came out of these runs, is switched off here); nDCG@10.

    python -m bench.experiments.feedback SCIFACT tests/fixtures/news_shipped \
        bench/out/news_lee bench/out/news_lee_paraphrase bench/out/combined [--feedback 1] [--terms 8]

SCIFACT: a BEIR-layout folder such as SciFact.

Each question is ranked by the default hybrid (`SearchIndex.rank`, one passage per document); then
the words of its best `--feedback` passages that the question does not use (at least 3 letters, in
at most 10% of the passages) are scored by how many of those passages hold them times their idf,
and the best `--terms` become a second keyword query. Its coverage (`SearchIndex.keyword_coverage`,
each word at weight 1, with the same share of the word the passage's vector misses) is added to
the hybrid's fused score of every candidate, × g × the hybrid's keyword weight, and the candidates
ranked again (documents by their best passage, near-copies not collapsed: g 0 reproduces eval's
figures within 0.001). On the combined folder (gate.py combine) one line per set.
"""

from __future__ import annotations

import argparse
import collections
import re

import numpy as np

from embeddings.metrics import evaluate_run
from embeddings.search import HybridRule, fts_terms

from .common import SETS_HELP, full_model_sets, passage_texts

GAINS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
COMMON = 0.1  # share of passages above which a word says little about the topic
# The default's feedback switched off: this script adds its own variants.
RULE = HybridRule(feedback_words=0)


def expansion(index, question: str, passages: list[str], terms: int) -> list[str]:
    asked = set(fts_terms(question))
    held = collections.Counter(w for text in passages for w in set(fts_terms(text)) if w not in asked and len(w) > 2)
    scored = [
        (count * index.idf_sum([w]), w)
        for w, count in held.items()
        if 0 < index.term_count(w) <= COMMON * index.passage_count
    ]
    return [w for _, w in sorted(scored, reverse=True)[:terms]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help=SETS_HELP)
    parser.add_argument("--feedback", type=int, default=1, help="passages the expansion words come from")
    parser.add_argument("--terms", type=int, default=8, help="expansion words")
    args = parser.parse_args()
    for embedder, data, path, index in full_model_sets(args.folders):
        runs: dict[float, dict[str, list[str]]] = {g: {} for g in GAINS}
        for qid, judged in data.qrels.items():
            if not any(v > 0 for v in judged.values()):
                continue
            question = data.queries[qid]
            ranking = index.rank(question, embedder, n=100, per_article=1, mode="hybrid", rule=RULE)
            candidates = ranking.candidates
            words = expansion(
                index, question, list(passage_texts(path, index, ranking.picked[: args.feedback]).values()), args.terms
            )
            extra = np.zeros(len(candidates.rows))
            if words:
                weights = {w: 1.0 for w in words}
                extra = index.keyword_coverage(words, None, weights, index.word_vectors.of(words, embedder), RULE)(
                    candidates.rows
                )
            for g in GAINS:
                order = np.argsort(-(candidates.scores + g * RULE.weight * extra), kind="stable")
                documents = list(
                    dict.fromkeys(index.articles[index.passage_article[i]].key for i in candidates.rows[order])
                )
                runs[g][qid] = documents[:100]
        qids = list(runs[0.0])
        groups = sorted({q.split("-")[0] + "-" for q in qids}) if all(re.match(r"q\d+-", q) for q in qids) else [""]
        for group in groups:
            qrels = {q: j for q, j in data.qrels.items() if q.startswith(group)}
            cells = [
                f"g {g}: {evaluate_run({q: r for q, r in runs[g].items() if q.startswith(group)}, qrels)['ndcg@10']:.4f}"
                for g in GAINS
            ]
            print(
                f"{data.name} {group}".strip(),
                f"(feedback {args.feedback}, {args.terms} words):",
                " | ".join(cells),
                flush=True,
            )


if __name__ == "__main__":
    main()
