"""What the experiments share: where the repository is, the evaluation sets as `corpus-bot eval`
indexes them, and ranking documents by their best passage as `run_eval` does."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from embeddings import store
from embeddings.config import DEFAULT_MODEL
from embeddings.embedder import load_embedder
from embeddings.evaluate import BeirData, cached_index, load_beir
from embeddings.metrics import evaluate_run
from embeddings.query_model import load_query_embedder
from embeddings.search import SearchIndex

# Paths are the repository's, whatever the working directory.
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "out"
# One cache for every experiment: a set is embedded once. Set EVAL_CACHE to share another.
CACHE = Path(os.environ.get("EVAL_CACHE") or OUT / "eval-cache")
# How each script describes its evaluation-set arguments.
SETS_HELP = (
    "evaluation sets: BEIR-layout folders (corpus.jsonl, queries.jsonl, qrels.tsv) such as SciFact, "
    "tests/fixtures/news_shipped or bench/out/news_lee (bench/news_lee/README.md)"
)


def eval_sets(
    folders: list[str], cache: Path = CACHE, embedder=None
) -> Iterator[tuple[object, BeirData, Path, SearchIndex]]:
    """(query embedder, set, index path, SearchIndex) per BEIR folder, indexed as `corpus-bot eval` does."""
    for folder in folders:
        data = load_beir(Path(folder))
        path = cached_index(data, DEFAULT_MODEL, cache, embedder=embedder)
        query_embedder = load_query_embedder(path, DEFAULT_MODEL)
        yield query_embedder, data, path, SearchIndex.load(path, model_name=DEFAULT_MODEL, weak_score=0.3)


def full_model_sets(folders: list[str], cache: Path = CACHE) -> Iterator[tuple[object, BeirData, Path, SearchIndex]]:
    """(embedder, set, index path, SearchIndex) per BEIR folder, as eval_sets, with the full model
    for the questions too: for scripts that embed other texts or read its tokenizer."""
    embedder = load_embedder(DEFAULT_MODEL)
    for folder in folders:
        data = load_beir(Path(folder))
        path = cached_index(data, DEFAULT_MODEL, cache, embedder=embedder)
        yield embedder, data, path, SearchIndex.load(path, model_name=DEFAULT_MODEL, weak_score=0.3)


def documents_by_score(index: SearchIndex, rows: np.ndarray, scores: np.ndarray, n: int = 100) -> list[str]:
    """The keys of the n best documents, each ranked by its best passage among rows (near-copies
    not collapsed)."""
    seen: dict[str, None] = {}
    for i in np.asarray(rows)[np.argsort(-np.asarray(scores), kind="stable")]:
        seen.setdefault(index.articles[index.passage_article[int(i)]].key)
        if len(seen) == n:
            break
    return list(seen)


def ndcg(runs: dict[str, list[str]], data: BeirData) -> float:
    return round(evaluate_run(runs, data.qrels, k=10)["ndcg@10"], 4)


def judged_questions(data: BeirData) -> list[str]:
    return [q for q, judged in data.qrels.items() if any(g > 0 for g in judged.values())]


def passage_texts(index_path: Path, index: SearchIndex, rows) -> dict[int, str]:
    """The texts of the passages at these rows of index, by passage id, read from its file."""
    ids = [int(index.passage_ids[int(r)]) for r in rows]
    if not ids:
        return {}
    with store.reading(index_path) as conn:
        found = dict(conn.execute(f"SELECT id, text FROM passages WHERE id IN ({','.join('?' * len(ids))})", ids))
    return {pid: found[pid] for pid in ids if pid in found}


def rows_of(index: SearchIndex, passage_ids) -> np.ndarray:
    """The row of each passage id in index, -1 where it holds none."""
    ids = np.asarray(passage_ids, np.int64)
    order = np.argsort(index.passage_ids, kind="stable")
    ordered = np.asarray(index.passage_ids)[order]
    if not len(ordered):
        return np.full(len(ids), -1, np.int64)
    at = np.clip(np.searchsorted(ordered, ids), 0, len(ordered) - 1)
    return np.where(ordered[at] == ids, order[at], -1)
