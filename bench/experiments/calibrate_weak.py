"""How often the weak-answer flag is wrong, on a labelled set and across evaluation sets.

    python -m bench.experiments.calibrate_weak                                   # the labelled set
    python -m bench.experiments.calibrate_weak SCIFACT tests/fixtures/news_shipped  # and across sets

SCIFACT: a BEIR-layout folder such as SciFact.

The labelled set (tests/fixtures/weak_flag/questions.jsonl) asks name, number, place, jargon and
author questions that the shipped corpus (`corpus/`) or the articles written for it
(tests/fixtures/weak_flag/corpus/) answer, and questions they cannot answer: off-topic ones, and
ones whose rare word the corpus holds only by coincidence ("Who is Maria Hassan?" where an author
is Sharif Hassan). Each question is asked as `corpus-bot ask` asks it (the default mode, DEFAULT_K
passages) and two errors are counted: an answerable question flagged weak, and an unanswerable one
not flagged. "Answer shown" says whether the passage that answers it is among those shown.

Given BEIR-layout folders, it also asks each set's questions against its own corpus ("answered":
those whose first passage is from a document judged relevant) and every other set's questions
against it ("unanswerable"), and prints the same two error rates and the distribution of the best
cosine shown. Folders given with --answered are only asked their own questions (sets whose
corpora overlap another's, like the two news_lee builds).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from embeddings.config import Settings
from embeddings.evaluate import cached_index, load_beir
from embeddings.index import run_index
from embeddings.query_model import load_query_embedder
from embeddings.search import DEFAULT_K, SearchIndex

from .common import OUT, ROOT

LABELLED = ROOT / "tests" / "fixtures" / "weak_flag"
CORPORA = {"shipped": ROOT / "corpus", "written": LABELLED / "corpus"}


def labelled(settings: Settings, cache: Path, verbose: bool) -> None:
    questions = [json.loads(line) for line in (LABELLED / "questions.jsonl").read_text().splitlines() if line.strip()]
    rows = []
    for name, folder in CORPORA.items():
        path = cache / f"{name}.sqlite3"
        run_index(replace(settings, corpus_dir=folder, index_path=path))
        embedder = load_query_embedder(path, settings.embedding_model)
        index = SearchIndex.load(path, model_name=settings.embedding_model, weak_score=settings.weak_score)
        for q in (q for q in questions if q["corpus"] == name):
            answer = index.search(q["question"], embedder, k=DEFAULT_K)
            answerable = bool(q.get("answer") or q.get("article"))
            shown = any(
                (q.get("answer") and q["answer"] in r.text) or (q.get("article") and r.article.key == q["article"])
                for r in answer.results
            )
            rows.append(
                {
                    **q,
                    "answerable": answerable,
                    "weak": answer.weak,
                    "shown": shown,
                    "best_cosine": max((r.score for r in answer.results), default=0.0),
                }
            )
        index.close()
    for group in ["all", *CORPORA]:
        part = [r for r in rows if group in ("all", r["corpus"])]
        good = [r for r in part if r["answerable"]]
        bad = [r for r in part if not r["answerable"]]
        shown = [r for r in good if r["shown"]]
        print(
            f"{group:8} answerable flagged weak {sum(r['weak'] for r in good)}/{len(good)}"
            f" (answer shown: {sum(r['weak'] for r in shown)}/{len(shown)});"
            f" unanswerable not flagged {sum(not r['weak'] for r in bad)}/{len(bad)}"
        )
    for r in rows:
        wrong = r["weak"] == r["answerable"]
        if wrong or verbose:
            what = ("answerable, flagged weak" if r["answerable"] else "unanswerable, not flagged") if wrong else "ok"
            print(
                f"  {what:27} {r['corpus']:8} {r['kind']:12} cos {r['best_cosine']:.2f}"
                f"{'' if r['shown'] or not r['answerable'] else ' (answer not shown)'}  {r['question']}"
            )


def across_sets(settings: Settings, folders: list[str], cache: Path, own_only: list[str]) -> None:
    sets = [load_beir(Path(f)) for f in folders]
    answered, unanswerable = [], []  # (weak, best cosine shown)
    for data in sets + [load_beir(Path(f)) for f in own_only]:
        path = cached_index(data, settings.embedding_model, cache)
        embedder = load_query_embedder(path, settings.embedding_model)
        index = SearchIndex.load(path, model_name=settings.embedding_model, weak_score=settings.weak_score)
        for qid, judged in data.qrels.items():
            answer = index.search(data.queries[qid], embedder, k=DEFAULT_K)
            if answer.results and judged.get(answer.results[0].article.key, 0) > 0:
                answered.append((answer.weak, max(r.score for r in answer.results)))
        for other in sets if data in sets else []:
            if other is not data:
                for qid in other.qrels:
                    answer = index.search(other.queries[qid], embedder, k=DEFAULT_K)
                    unanswerable.append((answer.weak, max((r.score for r in answer.results), default=0.0)))
        index.close()
    a, u = np.array([c for _, c in answered]), np.array([c for _, c in unanswerable])
    print(
        f"across sets: answered flagged weak {sum(w for w, _ in answered)}/{len(answered)},"
        f" unanswerable not flagged {sum(not w for w, _ in unanswerable)}/{len(unanswerable)}"
    )
    print(
        f"  best cosine shown: answered min {a.min():.3f} p5 {np.percentile(a, 5):.3f} median {np.median(a):.3f}"
        + (
            f"; unanswerable median {np.median(u):.3f} p95 {np.percentile(u, 95):.3f} max {u.max():.3f}"
            if len(u)
            else ""
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", help="BEIR-layout folders to ask across")
    parser.add_argument(
        "--answered", nargs="+", default=[], metavar="FOLDER", help="BEIR-layout folders asked only their own questions"
    )
    parser.add_argument(
        "--cache", type=Path, default=OUT / "weak-flag", help="where the indexes are kept [bench/out/weak-flag]"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="list every question, not only the errors")
    args = parser.parse_args()
    settings = Settings.from_env()
    args.cache.mkdir(parents=True, exist_ok=True)
    labelled(settings, args.cache, args.verbose)
    if args.folders or args.answered:
        across_sets(settings, args.folders, args.cache, args.answered)


if __name__ == "__main__":
    main()
