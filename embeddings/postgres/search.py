"""SearchIndex over the index in PostgreSQL: PostgresKeywords (the keyword-engine seam) scores
PostgreSQL full-text matches by BM25 as FTS5 does, and PostgresVectors (the vector-source seam)
loads the snapshot's halfvec vectors, which SearchIndex searches in memory as it does the SQLite
file's. A snapshot is one REPEATABLE READ transaction, held until the index is closed, so every
read of a question (texts, keyword hits, word vectors) sees the state its vectors came from.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from ..errors import ModelMismatchError
from ..search import engines, hybrid
from ..search.engines import CONTEXT_WEIGHT, LoadedVectors
from ..search.hybrid import HybridRule
from ..search.search_index import SearchIndex
from ..vectors import VectorMatrix, checked_scale
from . import store

log = logging.getLogger(__name__)

K1, B = 1.2, 0.75  # FTS5's bm25() constants, so scores compare with the SQLite index's

# BM25 of the passages matching any of the lexemes, as FTS5 computes it: a lexeme's frequency is
# its hits in the text plus CONTEXT_WEIGHT times its hits in the context (weight B), the length
# is the words of both, and idf comes from each lexeme's own document frequency.
_TOP = f"""
WITH q(lexeme, idf) AS (SELECT * FROM unnest(%(lexemes)s::text[], %(idfs)s::float8[])),
hits AS (
    SELECT p.id, p.text_words + p.context_words AS dl, u.lexeme,
           (SELECT sum(CASE w WHEN 'A' THEN 1.0 ELSE %(context)s END) FROM unnest(u.weights) w) AS f
    FROM passages p, unnest(p.search) u
    WHERE p.search @@ %(query)s::tsquery AND u.lexeme = ANY(%(lexemes)s::text[])
)
SELECT h.id, sum(q.idf * h.f * {K1 + 1} / (h.f + {K1} * ({1 - B} + {B} * h.dl / %(avgdl)s))) AS score
FROM hits h JOIN q USING (lexeme)
GROUP BY h.id ORDER BY score DESC, h.id LIMIT %(limit)s
"""


class QmarkConnection:
    """A psycopg connection as SearchIndex and word_vectors use theirs: SQL with `?` placeholders."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def execute(self, sql: str, params=()):
        return self.conn.execute(sql.replace("?", "%s"), tuple(params))

    def close(self) -> None:
        self.conn.close()


class PostgresKeywords:
    """PostgreSQL full-text search over passages.search (GIN), read through the snapshot's connection
    under `lock`. Words are stemmed by the text search configuration; a word it drops (an English
    stop word) matches nothing."""

    def __init__(self, conn, lock: threading.Lock, passages: int, average_length: float) -> None:
        self._conn, self._lock = conn, lock
        self._passages, self._avgdl = passages, max(average_length, 1.0)
        self._lexeme: dict[str, str | None] = {}
        self._counts: dict[str, int] = {}  # lexeme -> passages holding it, in this snapshot

    def _lexemes(self, words: list[str]) -> dict[str, str | None]:
        new = [w for w in dict.fromkeys(words) if w not in self._lexeme]
        if new:
            with self._lock:
                rows = self._conn.execute(
                    f"SELECT w, (SELECT min(lexeme) FROM unnest(to_tsvector('{store.TEXT_SEARCH_CONFIG}', w))) "
                    "FROM unnest(%s::text[]) WITH ORDINALITY AS x(w, n) ORDER BY n",
                    ([store.keyword_text(w) for w in new],),
                ).fetchall()
            if len(self._lexeme) > 100_000:  # a bound for a bot that runs for months
                self._lexeme.clear()
            self._lexeme.update((word, lexeme) for word, (_, lexeme) in zip(new, rows))
        return {w: self._lexeme.get(w) for w in words}

    def _count(self, lexeme: str) -> int:
        if lexeme not in self._counts:
            with self._lock:
                count = self._conn.execute(
                    "SELECT count(*) FROM passages WHERE search @@ %s::tsquery", (_tsquery([lexeme]),)
                ).fetchone()[0]
            if len(self._counts) > 100_000:
                self._counts.clear()
            self._counts[lexeme] = count
        return self._counts[lexeme]

    def term_count(self, word: str) -> int:
        lexeme = self._lexemes([word])[word]
        return self._count(lexeme) if lexeme else 0

    document_frequency = term_count

    def _idf(self, df: int) -> float:
        return max(float(np.log((self._passages - df + 0.5) / (df + 0.5))), 1e-6)  # FTS5's, floored as it does

    def idf_sum(self, words: list[str]) -> float:
        return sum(self._idf(df) for df in map(self.term_count, words) if df)

    def query_words(self, terms: list[str], rule: HybridRule) -> list[str]:
        # Like FTS5, every passage a word matches is scored: a common word costs more than it adds.
        return hybrid.without_common(terms, self.term_count, self._passages, rule)

    def top(self, terms: list[str], limit: int) -> tuple[np.ndarray, np.ndarray]:
        lexemes = sorted({lx for lx in self._lexemes(terms).values() if lx})
        if not lexemes or not self._passages:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        idfs = [self._idf(self._count(lx)) for lx in lexemes]
        with self._lock:
            found = self._conn.execute(
                _TOP,
                {
                    "lexemes": lexemes,
                    "idfs": idfs,
                    "context": CONTEXT_WEIGHT,
                    "query": _tsquery(lexemes),
                    "avgdl": self._avgdl,
                    "limit": limit,
                },
            ).fetchall()
        ids = np.fromiter((r[0] for r in found), np.int64, len(found))
        scores = np.fromiter((r[1] for r in found), np.float32, len(found))
        return ids, scores


def _tsquery(lexemes: list[str]) -> str:
    """The lexemes OR-ed as tsquery text, each quoted: nothing a user types is read as syntax."""
    return " | ".join("'" + lx.replace("\\", "\\\\").replace("'", "''") + "'" for lx in lexemes)


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
        avgdl = conn.execute("SELECT coalesce(avg(text_words + context_words), 0) FROM passages").fetchone()[0]
        index = SearchIndex.from_snapshot(
            QmarkConnection(conn), meta, articles, loaded, weak_score=weak_score, where=store.shown(url)
        )
    except BaseException:
        conn.close()
        raise
    keywords = PostgresKeywords(conn, index._lock, index.passage_count, float(avgdl))
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
