"""Keyword and hybrid quality with FTS5 and with the tantivy copy that large indexes search with.

    python -m bench.experiments.tantivy_quality SCIFACT tests/fixtures/news_shipped \
        bench/out/news_lee bench/out/news_lee_paraphrase   # the last two: bench/news_lee/README.md

SCIFACT: a BEIR-layout folder such as SciFact.

The evaluation sets are far below derived.LARGE_INDEX, so the copy is built here on purpose
(beside the cached evaluation index, removed afterwards) and each set is searched both ways
through the product's own search path. Prints nDCG@10 per engine and mode, and how many of
FTS5's keyword top 10 tantivy also returns. The numbers go into docs/retrieval.md.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from bench.benchmark import keyword_top10_shared
from embeddings import derived, store, tantivy_index
from embeddings.config import Settings
from embeddings.embedder import load_embedder
from embeddings.evaluate import cached_index, load_beir, run_eval
from embeddings.search import SearchIndex

from .common import SETS_HELP


def main(folders: list[str]) -> None:
    settings = Settings.from_env()
    embedder = load_embedder(settings.embedding_model)
    derived.LARGE_INDEX = 0
    print(f"{'set':<22} {'FTS5 keyword/hybrid':>20} {'tantivy keyword/hybrid':>24} {'top-10 shared':>14}")
    for folder in folders:
        data = load_beir(Path(folder))
        path = cached_index(data, embedder.name, settings.index_path.parent / "eval-cache", embedder=embedder)
        conn = store.connect_for_writing(path)
        if "generation" not in store.read_meta(conn):  # an evaluation index cached before generations existed
            store.write_meta(conn, generation=store.new_generation())
        conn.close()
        tantivy_index.refresh(path)
        index = SearchIndex.load(path, model_name=embedder.name, weak_score=0.3)
        copy = index.tantivy
        assert copy is not None
        try:
            scores = {}
            for engine in ("fts5", "tantivy"):
                index.tantivy = copy if engine == "tantivy" else None
                scores[engine] = [
                    run_eval(data, index, embedder, mode=mode)["ndcg@10"] for mode in ("keyword", "hybrid")
                ]
            index.tantivy = copy
            shared = keyword_top10_shared(index, [data.queries[qid] for qid in data.qrels])
            f, t = scores["fts5"], scores["tantivy"]
            print(f"{data.name:<22} {f[0]:>9.3f} / {f[1]:.3f} {t[0]:>13.3f} / {t[1]:.3f} {shared:>14.2f}")
        finally:
            index.close()
            shutil.rmtree(tantivy_index.folder_for(path), ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help=SETS_HELP)
    main(parser.parse_args().folders)
