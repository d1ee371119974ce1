"""The seams between search and what stores an index: keyword engines and vector sources.

A KeywordEngine answers the keyword side: the BM25 top hits of some words, a word's document
frequency, the words' idf sum (each engine by its own formula, the one its BM25 uses), and which
of the question's words are worth a query. Fts5Keywords reads the SQLite file's FTS5 table (every
index has one); TantivyKeywords the tantivy copy of a large index (tantivy_index.py);
KeywordFallback asks the tantivy copy until it fails, then FTS5.

A VectorSource loads a snapshot's passage vectors: SqliteVectors from the SQLite file's blobs,
VectorFileVectors from the vector file of a large index (vector_file.py), which declines (None)
when it does not hold the snapshot, so the next source is tried. What it loads is a VectorSearch:
a VectorMatrix in memory, or one that searches where the vectors are stored (PostgreSQL).

SearchIndex (search_index.py) uses only these interfaces. The index in PostgreSQL passes its own
to SearchIndex.from_snapshot (embeddings/postgres/: PostgresKeywords, PostgresVectorSearch).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .. import derived, store, tantivy_index, vector_file
from ..errors import IndexDamagedError
from ..vectors import DTYPE, VectorMatrix, checked_scale
from . import hybrid
from .hybrid import HybridRule

log = logging.getLogger("embeddings.search")

CONTEXT_WEIGHT = 0.5  # BM25 weight of the context column (title, publication, authors) relative to the text


# ------------------------------------------------------------------ keyword engines


class KeywordEngine(Protocol):
    def top(self, terms: list[str], limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Passage ids and BM25 scores (higher is better) of the best `limit` passages matching
        any of the words, best first; the context (title, publication, authors) at CONTEXT_WEIGHT."""

    def top_each(self, words: list[str], limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """top([word], limit) of each word (in fewer round trips where the engine is a server)."""

    def document_frequency(self, word: str) -> int:
        """Passages holding the word, as this engine counts them."""

    def document_frequencies(self, words: list[str]) -> list[int]:
        """document_frequency of each word (one round trip where the engine is a server)."""

    def idf_sum(self, words: list[str]) -> float:
        """Sum of the words' BM25 idf, as this engine computes it (0 for a word no passage has)."""

    def query_words(self, terms: list[str], rule: HybridRule) -> list[str]:
        """The words worth a query: all of them, or fewer where common words cost this engine
        more than they add (hybrid.without_common)."""


def fts_match(terms: list[str]) -> str:
    """A safe FTS5 MATCH expression: the words, each quoted, OR-ed together.

    Quoting every token means nothing a user types (quotes, AND/OR/NEAR, -, :, *, parentheses)
    can be read as FTS5 syntax, so a question can never raise a query syntax error."""
    return " OR ".join(f'"{t}"' for t in terms)


class Fts5Keywords:
    """The FTS5 table in the SQLite file, read through the snapshot's connection (under `lock`:
    one connection shared by the search threads)."""

    def __init__(self, conn, lock: threading.Lock, passages: int) -> None:
        self._conn = conn
        self._lock = lock
        self._passages = passages
        self._term_counts: dict[str, int] = {}  # passages matching each question word, in this snapshot

    def top(self, terms: list[str], limit: int) -> tuple[np.ndarray, np.ndarray]:
        match = fts_match(terms) if self._passages else ""
        if not match:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        with self._lock:
            found = self._conn.execute(
                # bm25 once per row (naming it twice computed it twice): lower is better.
                "SELECT rowid, bm25(passage_fts, 1.0, ?) AS s FROM passage_fts WHERE passage_fts MATCH ? "
                "ORDER BY s LIMIT ?",
                (CONTEXT_WEIGHT, match, limit),
            ).fetchall()
        ids = np.fromiter((r[0] for r in found), np.int64, len(found))
        scores = np.fromiter((-r[1] for r in found), np.float32, len(found))
        return ids, scores

    def top_each(self, words: list[str], limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.top([w], limit) for w in words]

    def term_count(self, term: str) -> int:
        """Passages whose text or context (title, publication, authors) contain the word (as FTS5
        tokenizes it), cached for this snapshot."""
        if term not in self._term_counts:
            with self._lock:
                count = self._conn.execute(
                    "SELECT count(*) FROM passage_fts WHERE passage_fts MATCH ?", (fts_match([term]),)
                ).fetchone()[0]
            if len(self._term_counts) > 100_000:  # a bound for a bot that runs for months
                self._term_counts.clear()
            self._term_counts[term] = count
        return self._term_counts[term]

    document_frequency = term_count

    def document_frequencies(self, words: list[str]) -> list[int]:
        return [self.term_count(w) for w in words]

    def idf_sum(self, words: list[str]) -> float:
        n = self._passages
        # FTS5's idf (sqlite.org/fts5.html#the_bm25_function), floored as FTS5 floors it.
        return sum(max(np.log((n - df + 0.5) / (df + 0.5)), 1e-6) for df in map(self.term_count, words) if df)

    def query_words(self, terms: list[str], rule: HybridRule) -> list[str]:
        # FTS5 scores every passage a word matches: a common word costs more than it adds.
        return hybrid.without_common(terms, self.term_count, self._passages, rule)


class TantivyKeywords:
    """The tantivy copy (tantivy_index.TantivyIndex): its block-max pruning skips what common words
    would cost FTS5, so every word is searched."""

    def __init__(self, index: tantivy_index.TantivyIndex) -> None:
        self.index = index

    def top(self, terms: list[str], limit: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.top(terms, limit, context_weight=CONTEXT_WEIGHT)

    def top_each(self, words: list[str], limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.top([w], limit) for w in words]

    def document_frequency(self, word: str) -> int:
        return self.index.doc_freq(word)  # stemmed, in the text

    def document_frequencies(self, words: list[str]) -> list[int]:
        return [self.index.doc_freq(w) for w in words]

    def idf_sum(self, words: list[str]) -> float:
        return self.index.idf_sum(words)

    def query_words(self, terms: list[str], rule: HybridRule) -> list[str]:
        return terms


class KeywordFallback:
    """`first` until it fails, e.g. the tantivy copy on a damaged file, where its Rust code may
    panic (pyo3 raises that as a PanicException, a BaseException): then `then` answers, the same
    passages, for the rest of this snapshot, and one warning says so."""

    def __init__(self, first: TantivyKeywords, then: Fts5Keywords) -> None:
        self.first: TantivyKeywords | None = first
        self.then = then
        self._lock = threading.Lock()  # switching once

    def _ask(self, method: str, *args):
        engine = self.first
        if engine is not None:
            try:
                return getattr(engine, method)(*args)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                self._failed(engine, exc)
        return getattr(self.then, method)(*args)

    def _failed(self, engine: TantivyKeywords, exc: BaseException) -> None:
        with self._lock:
            if self.first is not engine:
                return  # another thread already switched
            self.first = None
        reason = str(exc).splitlines()[0][:200] if str(exc) else ""
        log.warning(
            "keyword search uses FTS5: the tantivy copy failed (%s: %s); `corpus-bot index` checks it and "
            "builds it again",
            type(exc).__name__,
            reason,
        )

    def top(self, terms: list[str], limit: int) -> tuple[np.ndarray, np.ndarray]:
        return self._ask("top", terms, limit)

    def top_each(self, words: list[str], limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return self._ask("top_each", words, limit)

    def document_frequency(self, word: str) -> int:
        return self._ask("document_frequency", word)

    def document_frequencies(self, words: list[str]) -> list[int]:
        return self._ask("document_frequencies", words)

    def idf_sum(self, words: list[str]) -> float:
        return self._ask("idf_sum", words)

    def query_words(self, terms: list[str], rule: HybridRule) -> list[str]:
        return self._ask("query_words", terms, rule)


def keyword_engine(fts5: Fts5Keywords, index_path: Path, generation: str | None, passages: int) -> KeywordEngine:
    """The engine a snapshot's keyword search uses: the tantivy copy on a large index when it holds
    this snapshot (falling back to FTS5), else FTS5."""
    if passages >= derived.LARGE_INDEX:
        copy = tantivy_index.TantivyIndex.open(index_path, generation)
        if copy is not None:
            return KeywordFallback(TantivyKeywords(copy), fts5)
    return fts5


# ------------------------------------------------------------------ vector sources


class VectorSearch(Protocol):
    """Top-k, nearest rows and the vectors of given rows, by SearchIndex's row numbers
    (vectors.VectorMatrix documents each method)."""

    def top(self, query: np.ndarray, k: int, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def nearest_rows(self, query: np.ndarray, depth: int, keep: np.ndarray | None = None) -> np.ndarray: ...

    def dot(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray: ...

    def get(self, rows: np.ndarray) -> np.ndarray: ...

    def approx(self, rows: np.ndarray) -> np.ndarray: ...

    def read_ahead(self, rows: np.ndarray) -> None:
        """The rows' vectors will be asked for soon: read them now where reading costs a round trip."""


@dataclass
class LoadedVectors:
    vectors: VectorSearch  # a VectorMatrix, except where a store searches its own vectors
    passage_ids: np.ndarray  # in row order
    owners: list[int]  # article ids, in row order
    damaged_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # left out of search
    damaged: dict[int, str] = field(default_factory=dict)  # article id -> why some of its vectors are left out


class VectorSource(Protocol):
    def load(self) -> LoadedVectors | None:
        """The snapshot's vectors, or None when this source does not hold them (the next is tried)."""


class SqliteVectors:
    """The vector blobs in the SQLite file, read through the snapshot's connection: every index has them."""

    def __init__(self, conn, index_path: Path, passages: int, dimension: int) -> None:
        self._conn, self._index_path, self._passages, self._dimension = conn, index_path, passages, dimension

    def load(self) -> LoadedVectors:
        # Filled blob by blob: joining the blobs first doubled peak memory (and glibc kept
        # the freed half).
        exact = np.empty((self._passages, max(self._dimension, 1)), DTYPE)
        try:
            owners, damaged = store.read_vectors_into(self._conn, exact)
        except ValueError as exc:
            raise IndexDamagedError(
                f"the index at {self._index_path} is inconsistent ({exc}): run `corpus-bot index --rebuild`"
            ) from None
        # Checked where the codes' scale is computed: the same pass over the vectors.
        damaged_rows, scale = checked_scale(exact)
        return LoadedVectors(
            VectorMatrix(exact, scale), store.passage_ids_by_row(self._conn), owners, damaged_rows, damaged
        )


class VectorFileVectors:
    """The vector file beside a large index (vector_file.py), when it holds this snapshot."""

    def __init__(self, index_path: Path, generation: str | None, passages: int, dimension: int) -> None:
        self._index_path, self._generation, self._passages, self._dimension = (
            index_path,
            generation,
            passages,
            dimension,
        )

    def load(self) -> LoadedVectors | None:
        loaded = vector_file.load(self._index_path, self._generation, self._passages, self._dimension)
        return LoadedVectors(loaded.vectors, loaded.passage_ids, loaded.owners) if loaded else None


def vector_sources(conn, index_path: Path, generation: str | None, passages: int, dimension: int) -> list[VectorSource]:
    """Where a snapshot's vectors may be loaded from, the first to try first: the vector file on a
    large index (no load time, pages the kernel can share), then the SQLite file."""
    sources: list[VectorSource] = [SqliteVectors(conn, index_path, passages, dimension)]
    if passages >= derived.LARGE_INDEX:
        sources.insert(0, VectorFileVectors(index_path, generation, passages, dimension))
    return sources


def load_vectors(sources: list[VectorSource]) -> LoadedVectors:
    for source in sources:
        loaded = source.load()
        if loaded is not None:
            return loaded
    raise ValueError("no vector source holds this snapshot")  # the SQLite file always does
