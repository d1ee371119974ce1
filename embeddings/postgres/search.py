"""SearchIndex over the index in PostgreSQL: PostgresKeywords (the keyword-engine seam) scores
PostgreSQL full-text matches by BM25 as FTS5 does, and PostgresVectorSearch (the vector-search
seam) searches the halfvec column through its HNSW index in the database, reading by passage id
the few vectors a question needs: no process holds the index's vectors. A snapshot is one
REPEATABLE READ transaction, held until the index is closed, so every read of a question (vector
hits, texts, keyword hits, word vectors) sees one state of the index.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from ..errors import ModelMismatchError
from ..search.engines import LoadedVectors
from ..search.search_index import SearchIndex
from ..vectors import off_unit
from . import halfvec, store
from .keywords import PostgresKeywords
from .snapshot import Snapshot

log = logging.getLogger(__name__)


class Rows(list):
    """A statement's rows, read: what SearchIndex and word_vectors take from a cursor."""

    def fetchall(self) -> list:
        return list(self)

    def fetchone(self):
        return self[0] if self else None


class QmarkConnection:
    """A snapshot as SearchIndex and word_vectors use their connection: SQL with `?` placeholders,
    each statement read whole through a free connection of the snapshot."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def execute(self, sql: str, params=()) -> Rows:
        return Rows(self.snapshot.execute(sql.replace("?", "%s"), tuple(params)))

    def close(self) -> None:
        self.snapshot.close()


# Filtered searches matching fewer passages than this are scanned exactly (the btree on
# article_id, then every matching vector's distance): cheaper there than an HNSW scan that
# visits many non-matching passages per match, and never short (bench/experiments/pg_filters.py).
EXACT_BELOW = 20_000
# HNSW's candidate list per search (hnsw.ef_search): at least this, and at least the rows asked.
# pgvector accepts at most 1000; deeper, the iterative scan goes on (bench/experiments/pg_filters.py
# measures recall@10 against exact search on model-embedded vectors).
EF_SEARCH = 100
MAX_EF_SEARCH = 1000
RECENT_ROWS = 10_000  # vectors kept from the latest reads (float16: a few MB), for the next reads of a question

# `+ 0` keeps the planner off the index it would otherwise use: the HNSW index for the ordering
# (exact scan) or the btree for the filter (HNSW scan). These statements are never prepared:
# psycopg prepares repeated ones, and a cached plan ignores settings made after it (_read).
_HNSW = "SELECT id, embedding FROM passages {where} ORDER BY embedding <=> %(q)s LIMIT %(limit)s"
_EXACT = "SELECT id, embedding FROM passages {where} ORDER BY (embedding <=> %(q)s) + 0 LIMIT %(limit)s"
_BY_ID = "SELECT id, embedding FROM passages WHERE id = ANY(%(ids)s)"
# A query's rows handed over as one value (in no particular order: callers order by cosine or by
# row): a row per passage cost more in the driver than the search in the server.
_PACKED = "SELECT string_agg(int8send(id) || halfvec_send(embedding), ''::bytea) FROM ({rows}) found"


def passage_rows(conn) -> tuple[np.ndarray, np.ndarray]:
    """Each passage's id and article id, in article id then position order (SearchIndex's rows),
    as one value: 16 bytes a passage, no Python object per row (a COPY hands over a row at a time),
    read from the index passages_rows in its order (store.py, migration 9)."""
    (packed,) = conn.execute(
        "SELECT string_agg(int8send(id) || int8send(article_id), ''::bytea ORDER BY article_id, position) "
        "FROM passages",
        binary=True,
    ).fetchone()
    rows = np.frombuffer(packed or b"", np.dtype([("id", ">i8"), ("article", ">i8")]))
    return rows["id"].astype(np.int64), rows["article"].astype(np.int64)


class PostgresVectorSearch:
    """The vector side of a PostgreSQL snapshot, searched where it is stored: the HNSW index
    (halfvec, cosine) answers top-k, and the few vectors a question needs beyond that are read by
    passage id. Holds each row's passage and article id and the last vectors it read (RECENT_ROWS),
    never the index's vectors; its reads go through the snapshot's connections.

    The interface of vectors.VectorMatrix (top, nearest_rows, dot, get, approx), so SearchIndex
    asks either alike; rows are SearchIndex's (passage_ids order). A search under a `keep` mask
    asks for the kept rows' articles: exactly where they hold few passages (EXACT_BELOW), through
    the HNSW index otherwise, and exactly again where that comes back short."""

    def __init__(self, snapshot: Snapshot, passage_ids: np.ndarray, articles: np.ndarray, dim: int) -> None:
        self._snapshot = snapshot
        self._lock = threading.Lock()  # the vectors read lately
        self.rows, self.dim = len(passage_ids), dim
        self._passage_ids, self._articles = passage_ids, articles  # each row's
        self._id_order = np.argsort(passage_ids, kind="stable")
        self._sorted_ids = passage_ids[self._id_order]
        self._damaged_seen: set[int] = set()
        # Vectors read lately, by row: a question reads its candidates' vectors several times
        # (search, fusion, rescoring, near-copies); a snapshot's never change.
        self._recent: dict[int, np.ndarray] = {}
        self._ef_search: dict[int, int | None] = {}  # the hnsw.ef_search each connection's transaction has
        self._packed = halfvec.after_id(dim)

    def __len__(self) -> int:
        return self.rows

    def _rows_of(self, ids: np.ndarray) -> np.ndarray:
        if not len(self._sorted_ids):
            return np.full(len(ids), -1, np.int64)
        at = np.clip(np.searchsorted(self._sorted_ids, ids), 0, len(self._sorted_ids) - 1)
        return np.where(self._sorted_ids[at] == ids, self._id_order[at], -1)

    def _read(
        self, sql: str, params: dict, ef: int | None = None, *, filtered: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows and float32 vectors of a query's (id, embedding) results, in no particular order.
        With `ef`, the query is an HNSW scan with that hnsw.ef_search; a `filtered` one with
        sequential scans off, or the planner takes one (exact, and slow on a large table) where it
        expects few rows."""
        with self._snapshot.connection() as conn, conn.cursor(binary=True) as cur:
            # Local to the snapshot's transaction, so kept from one search to the next on the same
            # connection; never prepared, so the plan sees them.
            settings = {}
            if ef is not None and self._ef_search.get(id(conn)) != ef:
                settings["hnsw.ef_search"] = str(ef)
            if filtered:
                settings["enable_seqscan"] = "off"
            if settings:
                calls = ", ".join("set_config(%s, %s, true)" for _ in settings)
                cur.execute(f"SELECT {calls}", [v for kv in settings.items() for v in kv], prepare=False)
                self._ef_search[id(conn)] = ef
            try:
                (packed,) = cur.execute(_PACKED.format(rows=sql), params, prepare=False).fetchone()
            finally:
                if filtered:
                    cur.execute("SELECT set_config('enable_seqscan', 'on', true)", prepare=False)
        found = np.frombuffer(packed or b"", self._packed)
        if len(found) and (found["dim"] != self.dim).any():
            raise ValueError(f"a stored vector's dimension is not the index's {self.dim}")
        rows = self._rows_of(found["id"].astype(np.int64))
        found = found[rows >= 0]
        rows = rows[rows >= 0]
        with self._lock:
            if len(self._recent) > RECENT_ROWS:
                self._recent.clear()
            self._recent.update(zip(rows.tolist(), found["vector"].astype(np.float16)))  # halfvec: nothing lost
        return rows, found["vector"].astype(np.float32)

    def search(
        self, query: np.ndarray, depth: int, keep: np.ndarray | None = None, *, exact: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the `depth` nearest vectors (only rows where keep is True; the HNSW index's
        answer is approximate) and their vectors. `exact`: the exact scan (True) or the HNSW index
        (False, even where it comes back short) instead of the choice by the filter's size."""
        matching = self.rows if keep is None else int(keep.sum())
        depth = min(depth, matching)
        if depth <= 0:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        params: dict = {"q": halfvec.HalfVec(np.asarray(query, np.float32).reshape(self.dim)), "limit": depth}
        filtered = keep is not None and matching < self.rows
        if filtered:
            params["articles"] = np.unique(self._articles[keep]).tolist()
        if not (exact or (exact is None and filtered and matching < EXACT_BELOW)):
            where = "WHERE article_id + 0 = ANY(%(articles)s)" if filtered else ""
            found = self._kept(
                *self._read(
                    _HNSW.format(where=where), params, min(max(EF_SEARCH, depth), MAX_EF_SEARCH), filtered=filtered
                ),
                keep,
            )
            if len(found[0]) >= depth or exact is False:
                return found
        where = "WHERE article_id = ANY(%(articles)s)" if filtered else ""
        found = self._kept(*self._read(_EXACT.format(where=where), params), keep)
        if len(found[0]) < depth:  # keep leaves out some passages of its articles: ask for its passages
            params["ids"] = self._passage_ids[keep].tolist()
            found = self._kept(*self._read(_EXACT.format(where="WHERE id = ANY(%(ids)s)"), params), keep)
        return found

    @staticmethod
    def _kept(rows: np.ndarray, vectors: np.ndarray, keep: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if keep is None:
            return rows, vectors
        ok = keep[rows]  # SQL filters whole articles; keep may leave out some of their passages
        return rows[ok], vectors[ok]

    def get(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of the given rows, as float32, read by passage id; a row that is not a unit
        vector as zeros, which match nothing."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.zeros((0, self.dim), np.float32)
        wanted = rows.tolist()
        with self._lock:
            known = {r: self._recent[r] for r in wanted if r in self._recent}
        missing = np.unique(rows[[r not in known for r in wanted]])
        if len(missing):
            found, vectors = self._read(_BY_ID, {"ids": self._passage_ids[missing].tolist()})
            known.update(zip(found.tolist(), vectors))
        nothing = np.zeros(self.dim, np.float32)  # a row the snapshot does not have
        out = np.stack([known.get(r, nothing) for r in wanted]).astype(np.float32, copy=False)
        off = off_unit(out)
        if off.any():
            out[off] = 0
            new = set(rows[off].tolist()) - self._damaged_seen
            if new:
                self._damaged_seen |= new
                log.warning(
                    "vectors of %d passages (rows %s) are not unit vectors; they match nothing until "
                    "`corpus-bot index` writes them again",
                    len(new),
                    sorted(new)[:10],
                )
        return out

    approx = get  # the stored float16 values cost no more to read than any copy of them

    def read_ahead(self, rows: np.ndarray) -> None:
        """Read the rows' vectors into the ones kept from the latest reads (RECENT_ROWS)."""
        self.get(rows)

    def dot(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Cosine similarity of the query to the given rows."""
        return self.get(rows) @ np.asarray(query, np.float32)

    def top(self, query: np.ndarray, k: int, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the k most similar vectors (only rows where keep is True) and their cosines, best first."""
        rows, vectors = self.search(query, k, keep)
        vectors[off_unit(vectors)] = 0
        cosine = vectors @ np.asarray(query, np.float32)
        order = np.lexsort((rows, -cosine))[:k]
        return rows[order], cosine[order]

    def nearest_rows(self, query: np.ndarray, depth: int, keep: np.ndarray | None = None) -> np.ndarray:
        """Rows of the `depth` nearest vectors (only rows where keep is True), in row order."""
        return np.sort(self.search(query, depth, keep)[0])


def load_search_index(url: str, *, model_name: str, weak_score: float) -> SearchIndex:
    """A SearchIndex answering from the index at url, as SearchIndex.load does from an SQLite file:
    vectors searched in PostgreSQL (PostgresVectorSearch), keywords by PostgresKeywords, both
    through the connections of one snapshot, held until the index is closed."""
    snapshot = Snapshot(url)
    try:
        with snapshot.connection() as conn:
            meta = store.read_meta(conn)
            if meta.get("model") and meta["model"] != model_name:
                raise ModelMismatchError(
                    f"the index at {store.shown(url)} was built with {meta['model']!r} but EMBEDDING_MODEL is "
                    f"{model_name!r}; set EMBEDDING_MODEL back or run `corpus-bot index --rebuild`"
                )
            articles = store.read_articles(conn)
            ids, article_of_row = passage_rows(conn)
        starts = np.r_[True, article_of_row[1:] != article_of_row[:-1]] if len(ids) else np.zeros(0, bool)
        vectors = PostgresVectorSearch(snapshot, ids, article_of_row, int(meta.get("dimension") or 0))
        loaded = LoadedVectors(vectors, ids, article_of_row[starts].tolist())
        index = SearchIndex.from_snapshot(
            QmarkConnection(snapshot), meta, articles, loaded, weak_score=weak_score, where=store.shown(url)
        )
    except BaseException:
        snapshot.close()
        raise
    index.keyword = index._fts5 = PostgresKeywords(snapshot)  # term_count too: there is no FTS5 table here
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
