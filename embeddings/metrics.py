"""Retrieval metrics with trec_eval's definitions (as BEIR reports them through pytrec_eval).

- nDCG@k: gain = the judged relevance grade (not 2^rel - 1), discount log2(rank + 1); the ideal
  ranking sorts every judged document of the query by grade.
- Recall@k: relevant documents (grade > 0) in the top k / all relevant documents of the query.
- MRR@k (trec_eval `recip_rank` cut at k): 1 / rank of the first relevant document in the top k, else 0.
Only queries that have judgments are scored, and each metric is the mean over those queries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def ndcg_at(ranked: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    dcg = sum(judged.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    relevant = {d for d, g in judged.items() if g > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def mrr_at(ranked: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    for i, doc in enumerate(ranked[:k]):
        if judged.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def evaluate_run(
    run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], k: int = 10
) -> dict[str, float]:
    """Mean metrics over the judged queries; a judged query missing from run counts as zeros."""
    queries = [q for q in qrels if any(g > 0 for g in qrels[q].values())]
    if not queries:
        raise ValueError("no query has a relevant judgment")
    total = {f"ndcg@{k}": 0.0, f"recall@{k}": 0.0, "recall@100": 0.0, f"mrr@{k}": 0.0}
    for q in queries:
        ranked, judged = run.get(q, ()), qrels[q]
        total[f"ndcg@{k}"] += ndcg_at(ranked, judged, k)
        total[f"recall@{k}"] += recall_at(ranked, judged, k)
        total["recall@100"] += recall_at(ranked, judged, 100)
        total[f"mrr@{k}"] += mrr_at(ranked, judged, k)
    return {name: value / len(queries) for name, value in total.items()}
