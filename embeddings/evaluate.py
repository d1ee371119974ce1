"""`corpus-bot eval`: retrieval quality on a BEIR-layout folder, with the product's own search.

The folder holds `corpus.jsonl` (`_id, title, text`), `queries.jsonl` (`_id, text`) and
`qrels.tsv` or `qrels/test.tsv` (`query-id corpus-id score` with a header). The corpus is indexed
once into a cached SQLite file keyed by the data, the model and the chunking rules, so a second run
embeds nothing. Each document is an article; a document's rank is that of its best passage.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import query_model, store, tantivy_index, vector_file
from .embedder import Embedder, load_embedder
from .errors import EvalDataError
from .index import Progress, backfill_token_vectors, build_index, record_model_identity, remove_leftovers
from .metrics import evaluate_run
from .parse import ArticleDoc
from .search import DEFAULT_MODE, SearchIndex

# Bump when chunking or what is stored changes, so cached evaluation indexes are rebuilt.
INDEX_FORMAT = "2"


@dataclass(frozen=True)
class BeirData:
    name: str
    docs: list[ArticleDoc]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    digest: str


def _read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    if not path.is_file():
        raise EvalDataError(f"{path} is missing")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalDataError(f"{path} line {number}: invalid JSON ({exc.msg})") from None
            missing = [f for f in required if not isinstance(row, dict) or f not in row]
            if missing:
                raise EvalDataError(f"{path} line {number}: missing field {', '.join(missing)}")
            rows.append(row)
    return rows


def _read_qrels(folder: Path) -> tuple[dict[str, dict[str, int]], bytes]:
    path = next((p for p in (folder / "qrels.tsv", folder / "qrels" / "test.tsv") if p.is_file()), None)
    if path is None:
        raise EvalDataError(f"{folder} has no qrels.tsv (or qrels/test.tsv)")
    raw = path.read_bytes()
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        parts = line.split("\t") if "\t" in line else line.split()
        if number == 1 and parts[:2] == ["query-id", "corpus-id"]:
            continue
        if not line.strip():
            continue
        if len(parts) != 3:
            raise EvalDataError(f"{path} line {number}: expected 'query-id corpus-id score'")
        try:
            grade = int(parts[2])
        except ValueError:
            raise EvalDataError(f"{path} line {number}: score {parts[2]!r} is not an integer") from None
        qrels.setdefault(parts[0], {})[parts[1]] = grade
    return qrels, raw


def load_beir(folder: Path) -> BeirData:
    folder = Path(folder)
    if not folder.is_dir():
        raise EvalDataError(f"{folder} is not a folder")
    corpus_path = folder / "corpus.jsonl"
    docs = []
    for row in _read_jsonl(corpus_path, ("_id", "text")):
        text = str(row.get("text") or "").strip()
        if not text:
            continue
        paragraphs = tuple(p.strip() for p in text.split("\n\n") if p.strip())
        docs.append(
            ArticleDoc(
                key=str(row["_id"]),
                title=(str(row.get("title") or "").strip() or None),
                source=None,
                authors=(),
                published=None,
                updated=None,
                url=None,
                description=None,
                paragraphs=paragraphs,
            )
        )
    queries = {str(r["_id"]): str(r["text"]) for r in _read_jsonl(folder / "queries.jsonl", ("_id", "text"))}
    qrels, qrels_raw = _read_qrels(folder)
    qrels = {q: judged for q, judged in qrels.items() if q in queries}
    if not qrels:
        raise EvalDataError(f"{folder}: no judged query appears in queries.jsonl")
    digest = hashlib.sha256(corpus_path.read_bytes()).hexdigest()
    return BeirData(folder.resolve().name, docs, queries, qrels, digest)


def cached_index(
    data: BeirData,
    model_name: str,
    cache_dir: Path,
    *,
    embedder: Embedder | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> Path:
    """The evaluation index for data and model, built (and its ONNX query model exported) on first use."""
    key = hashlib.sha256(f"{data.digest}|{model_name}|{INDEX_FORMAT}".encode()).hexdigest()[:16]
    path = cache_dir / f"{data.name}-{key}.sqlite3"
    remove_leftovers(path, locked=False)  # of killed builds: no lock here, so only those whose process is gone
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        embedder = embedder or load_embedder(model_name, bulk=True)
        build_index(path, data.docs, embedder=embedder, source_hash=data.digest, on_progress=on_progress)
    else:  # cached by an older version: what it lacks is added once
        store.upgrade(path)  # this command owns its cache: an older schema is brought up to date
        if not _has_token_vectors(path):
            embedder = embedder or load_embedder(model_name, bulk=True)
            backfill_token_vectors(path, embedder)
        if not _meta(path).get("probe_vector"):
            embedder = embedder or load_embedder(model_name, bulk=True)
            record_model_identity(path, embedder)
    query_model.refresh(path, model_name, embedder)
    # A large set is searched as a large corpus would be: with the derived copies the index job makes.
    tantivy_index.refresh(path)
    vector_file.refresh(path)
    return path


def _meta(path: Path) -> dict:
    with store.reading(path) as conn:
        return store.read_meta(conn)


def _has_token_vectors(path: Path) -> bool:
    with store.reading(path) as conn:
        return conn.execute("SELECT 1 FROM token_vectors LIMIT 1").fetchone() is not None


def run_eval(data: BeirData, index: SearchIndex, embedder: Embedder, *, mode: str = DEFAULT_MODE, k: int = 10) -> dict:
    """Metrics and latency in the documented `corpus-bot eval --json` shape."""
    run: dict[str, list[str]] = {}
    latencies = []
    depth = max(100, k)
    scored = [q for q, judged in data.qrels.items() if any(g > 0 for g in judged.values())]
    for qid in scored:
        started = time.perf_counter()
        # Documents, each at the rank of its best passage: the article's other passages left out.
        ranking = index.rank(data.queries[qid], embedder, n=depth, per_article=1, penalty=math.inf, mode=mode)
        latencies.append((time.perf_counter() - started) * 1000)
        run[qid] = [index.articles[index.passage_article[i]].key for i in ranking.picked]
    metrics = evaluate_run(run, data.qrels, k=k)
    latencies.sort()
    return {
        "dataset": data.name,
        "mode": mode,
        "queries": len(run),
        **{name: round(value, 4) for name, value in metrics.items()},
        "latency_ms": {
            "p50": round(statistics.median(latencies), 2),
            "p95": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 2),
        },
    }
