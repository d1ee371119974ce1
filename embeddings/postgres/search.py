"""SearchIndex over the index in PostgreSQL: PostgresKeywords (the keyword-engine seam) scores
PostgreSQL full-text matches by BM25 as FTS5 does, and PostgresVectors (the vector-source seam)
loads the snapshot's halfvec vectors, which SearchIndex searches in memory as it does the SQLite
file's. A snapshot is one REPEATABLE READ transaction, held until the index is closed, so every
read of a question (texts, keyword hits, word vectors) sees the state its vectors came from.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ModelMismatchError
from ..search import engines
from ..search.engines import LoadedVectors
from ..search.search_index import SearchIndex
from ..vectors import VectorMatrix, checked_scale
from . import store
from .keywords import PostgresKeywords

log = logging.getLogger(__name__)


class QmarkConnection:
    """A psycopg connection as SearchIndex and word_vectors use theirs: SQL with `?` placeholders."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def execute(self, sql: str, params=()):
        return self.conn.execute(sql.replace("?", "%s"), tuple(params))

    def close(self) -> None:
        self.conn.close()


class PostgresVectors:
    """The snapshot's passage vectors from the halfvec column, in article id then position order."""

    def __init__(self, conn, dimension: int) -> None:
        self._conn, self._dimension = conn, dimension

    def load(self) -> LoadedVectors:
        exact, ids, owners = store.read_vectors(self._conn, self._dimension)
        damaged_rows, scale = checked_scale(exact)
        return LoadedVectors(VectorMatrix(exact, scale), ids, owners, damaged_rows)


def load_search_index(url: str, *, model_name: str, weak_score: float) -> SearchIndex:
    """A SearchIndex answering from the index at url, as SearchIndex.load does from an SQLite file."""
    conn = store.connect(url, migrate_schema=False)
    try:
        store.check_schema(conn, url)
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")  # the snapshot: held until close()
        meta = store.read_meta(conn)
        if meta.get("model") and meta["model"] != model_name:
            raise ModelMismatchError(
                f"the index at {store.shown(url)} was built with {meta['model']!r} but EMBEDDING_MODEL is "
                f"{model_name!r}; set EMBEDDING_MODEL back or run `corpus-bot index --rebuild`"
            )
        articles = store.read_articles(conn)
        loaded = engines.load_vectors([PostgresVectors(conn, int(meta.get("dimension") or 0))])
        index = SearchIndex.from_snapshot(
            QmarkConnection(conn), meta, articles, loaded, weak_score=weak_score, where=store.shown(url)
        )
    except BaseException:
        conn.close()
        raise
    keywords = PostgresKeywords(conn, index._lock)
    index.keyword = index._fts5 = keywords  # term_count too: there is no FTS5 table here
    return index


def query_model_anchor(index_path: Path) -> Path:
    """Where this host keeps the ONNX query model of a PostgreSQL index: `postgres.query-model/`
    in the folder of INDEX_PATH (query_model.query_model_dir), never in the database."""
    return index_path.with_name("postgres")


def query_embedder(model_name: str, index_meta: dict, index_path: Path):
    """The model that embeds questions for an index in PostgreSQL. Each host exports the ONNX
    query model from its own copy of the model files once (query_model_anchor) and verifies it
    against the index (the model files' hash, the probe text's vector) on every load, as the
    SQLite path verifies the export beside its file; where it cannot, the full model answers."""
    from .. import query_model
    from ..model_identity import decode_probe

    anchor = query_model_anchor(index_path)
    folder = query_model.query_model_dir(anchor)
    try:
        return query_model.verified_export(folder, model_name, index_meta)
    except query_model.QueryModelUnusable as exc:
        why = str(exc)
    embedder = query_model.load_embedder(model_name)
    query_model.check_query_embedder(embedder, index_meta)
    if (
        query_model.exportable(model_name) is None
        and isinstance(embedder, query_model.SentenceTransformerEmbedder)
        and index_meta.get("probe_vector")
    ):
        try:
            query_model.export_query_model(
                embedder,
                anchor,
                model_hash=index_meta.get("model_hash"),
                expected_probe=decode_probe(index_meta["probe_vector"]),
            )
            log.info("exported the ONNX query model to %s (%s)", folder, why)
        except Exception as exc:  # the full model answers; the next question tries again
            log.warning(
                "questions go through the full model %s, slower to start: the ONNX query model could not "
                "be exported to %s (%s: %s)",
                model_name,
                folder,
                type(exc).__name__,
                exc,
            )
    return embedder
