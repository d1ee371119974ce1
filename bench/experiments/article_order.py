"""How the per-article cap shapes the answers' order: news_shipped's questions asked against the
shipped corpus as articles (`corpus/`, five articles), scored by passage.

    python -m bench.experiments.article_order

tests/fixtures/news_shipped judges passages (`000#4` = the fourth passage of the article whose
file starts with 000), so the order an answer shows can be scored passage by passage: nDCG@10,
recall within the first 5, 10 and 20 passages, every judged passage reachable at any depth, and
how many articles the first five passages come from, and in how many answers the first five
cosines (the number shown before the relevance) are out of order. Each row is a setting of `SearchIndex.rank`:
an infinite penalty is the cap that hides (at most two passages of an article, never more), 0 is
the ranking with no cap at all.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

from embeddings.config import Settings
from embeddings.evaluate import load_beir
from embeddings.index import run_index
from embeddings.metrics import ndcg_at, recall_at
from embeddings.query_model import load_query_embedder
from embeddings.search import PER_ARTICLE, SearchIndex

from .common import OUT, ROOT

PENALTIES = [math.inf, 0.0, 0.05, 0.1, 0.15, 0.2, 0.3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=OUT / "article-order")
    args = parser.parse_args()
    settings = Settings.from_env()
    path = args.cache / "shipped.sqlite3"
    args.cache.mkdir(parents=True, exist_ok=True)
    run_index(replace(settings, corpus_dir=ROOT / "corpus", index_path=path))
    data = load_beir(ROOT / "tests" / "fixtures" / "news_shipped")
    embedder = load_query_embedder(path, settings.embedding_model)
    index = SearchIndex.load(path, model_name=settings.embedding_model, weak_score=settings.weak_score)

    def passage_key(row: int) -> str:
        return f"{index.articles[index.passage_article[row]].key[:3]}#{index.passage_position[row] + 1}"

    print(
        f"{'penalty':>8} {'nDCG@10':>8} {'R@5':>6} {'R@10':>6} {'R@20':>6} {'reach':>6} {'articles@5':>10}"
        f" {'cosine out of order@5':>22}"
    )
    for penalty in PENALTIES:
        totals = [0.0] * 7
        for qid, judged in data.qrels.items():
            ranking = index.rank(
                data.queries[qid], embedder, n=index.passage_count, per_article=PER_ARTICLE, penalty=penalty
            )
            keys = [passage_key(r) for r in ranking.picked]
            for j, value in enumerate(
                [
                    ndcg_at(keys, judged, 10),
                    recall_at(keys, judged, 5),
                    recall_at(keys, judged, 10),
                    recall_at(keys, judged, 20),
                    recall_at(keys, judged, len(keys)),
                    len({index.passage_article[r] for r in ranking.picked[:5]}),
                    any(a < b for a, b in zip(ranking.picked_cosine[:5], ranking.picked_cosine[1:5])),
                ]
            ):
                totals[j] += value
        mean = [t / len(data.qrels) for t in totals]
        print(
            f"{penalty:>8} {mean[0]:8.4f} {mean[1]:6.3f} {mean[2]:6.3f} {mean[3]:6.3f} {mean[4]:6.3f} {mean[5]:10.2f}"
            f" {totals[6]:>14.0f} of {len(data.qrels)}"
        )
    index.close()


if __name__ == "__main__":
    main()
