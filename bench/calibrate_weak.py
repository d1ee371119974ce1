"""Calibrate WEAK_SCORE: the best cosine among the passages an answer shows (the default search
mode, DEFAULT_K of them), for questions the corpus answers vs questions from another set (which it
cannot answer).

    python bench/calibrate_weak.py ../shared/eval/scifact tests/fixtures/news_shipped

"Answered": in-set questions whose top-ranked document is judged relevant. "Unanswerable": every
question of the other set asked against this set's corpus. Prints both distributions and the
threshold that maximises balanced accuracy over the two sets together.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from embeddings.config import Settings
from embeddings.embedder import load_embedder
from embeddings.evaluate import cached_index, load_beir
from embeddings.search import DEFAULT_K, SearchIndex


def main(folders: list[str]) -> None:
    settings = Settings.from_env()
    embedder = load_embedder(settings.embedding_model)
    sets = [load_beir(Path(f)) for f in folders]
    answered, unanswerable = [], []
    for data in sets:
        index = SearchIndex.load(cached_index(data, embedder.name, settings.index_path.parent / "eval-cache", embedder=embedder),
                                 model_name=embedder.name, weak_score=0.0)
        for qid, judged in data.qrels.items():
            ranking = index.rank(data.queries[qid], embedder, n=DEFAULT_K)
            top = ranking.picked[0]
            if judged.get(index.articles[index.passage_article[top]].key, 0) > 0:
                answered.append(max(ranking.picked_cosine))
        for other in sets:
            if other is data:
                continue
            for qid in other.qrels:
                ranking = index.rank(other.queries[qid], embedder, n=DEFAULT_K)
                unanswerable.append(max(ranking.picked_cosine))
        index.close()
    a, u = np.array(answered), np.array(unanswerable)
    print(f"answered     n={len(a)}  min {a.min():.3f}  p5 {np.percentile(a, 5):.3f}  median {np.median(a):.3f}")
    print(f"unanswerable n={len(u)}  median {np.median(u):.3f}  p95 {np.percentile(u, 95):.3f}  max {u.max():.3f}")
    best = max(np.arange(0.10, 0.60, 0.01), key=lambda t: (a >= t).mean() + (u < t).mean())
    for t in sorted({round(best, 2), 0.25, 0.30, 0.35}):
        print(f"threshold {t:.2f}: answered kept {100 * (a >= t).mean():.1f}%, unanswerable flagged {100 * (u < t).mean():.1f}%")
    print(f"best balanced accuracy at {best:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
