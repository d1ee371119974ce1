"""Vectors of single words, for hybrid search to ask how much of a question word a passage's
vector already carries (search/hybrid.py coverage: a keyword match counts more where it does not).

A word's vector is the mean of its tokens' vectors, each token encoded alone by the embedding model
([CLS] token [SEP]). The tokens of every word in the corpus are embedded once at index time and
stored in the index (table token_vectors, written in the run's transaction), so a question costs
no model call: encoding the question's words at question time took 9-13 ms with the ONNX model,
as long as the question itself. For a word the model cuts into pieces the mean of the pieces
stands in for encoding the word, and ranks as well on the evaluation sets (docs/retrieval.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from .embedder import Embedder
from .vectors import off_unit
from .words import WORD

log = logging.getLogger(__name__)

DTYPE = np.float16  # of the stored blobs: 768 bytes per token for a 384-dimension model


def missing_tokens(conn, texts: Iterable[str], embedder: Embedder, *, stored: bool = True) -> list[int]:
    """Tokens of the words of texts that the index holds no vector for (stored=False: ignoring
    what it holds), in id order."""
    words = {w for text in texts for w in WORD.findall(text.casefold())}
    needed = {t for ids in embedder.token_ids(sorted(words)) for t in ids}
    if stored:
        tokens, _ = _usable(conn.execute("SELECT token, vector FROM token_vectors").fetchall(), embedder.dimension)
        needed -= set(tokens.tolist())  # a damaged vector is embedded again
    return sorted(needed)


def damaged_tokens(conn, dimension: int) -> list[int]:
    """Tokens whose stored vector is not usable (a NULL, another size, not a unit vector): the
    index job embeds them again. Reads every token vector (at most one per vocabulary entry)."""
    rows = conn.execute("SELECT token, vector FROM token_vectors").fetchall()
    usable, _ = _usable(rows, dimension)
    return sorted({t for t, _ in rows} - set(usable.tolist()))


def _usable(rows: list[tuple[int, bytes]], dimension: int) -> tuple[np.ndarray, np.ndarray]:
    """The tokens and vectors of the rows that hold a unit vector of this dimension: a NULL, a
    blob of another size or a damaged value (vectors.off_unit) is left out."""
    width = dimension * np.dtype(DTYPE).itemsize
    good = [(t, v) for t, v in rows if isinstance(v, bytes) and len(v) == width]
    vectors = np.frombuffer(b"".join(v for _, v in good), DTYPE).reshape(len(good), dimension)
    tokens = np.array([t for t, _ in good], np.int64)
    if len(good):
        ok = ~off_unit(vectors)
        tokens, vectors = tokens[ok], vectors[ok]
    return tokens, vectors


def insert(conn, tokens: list[int], vectors: np.ndarray) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO token_vectors(token, vector) VALUES (?, ?)",
        zip(tokens, (v.astype(DTYPE).tobytes() for v in vectors)),
    )


class WordVectors:
    """The stored token vectors of one index snapshot."""

    def __init__(self, tokens: np.ndarray, vectors: np.ndarray) -> None:
        self._row = {int(t): i for i, t in enumerate(tokens)}
        self._vectors = vectors
        self._cache: dict[str, np.ndarray] = {}  # word -> vector: questions share their words

    @classmethod
    def load(cls, conn, dimension: int) -> WordVectors:
        rows = conn.execute("SELECT token, vector FROM token_vectors ORDER BY token").fetchall()
        tokens, vectors = _usable(rows, max(dimension, 1))
        if len(tokens) < len(rows):
            log.warning(
                "%d stored word vectors are damaged and left out (hybrid search weighs those words as if "
                "the index did not know them); `corpus-bot index` embeds them again",
                len(rows) - len(tokens),
            )
        return cls(tokens, vectors)

    def __len__(self) -> int:
        return len(self._row)

    def of(self, words: list[str], embedder: Embedder) -> np.ndarray:
        """Unit vectors of words (one row each); a zero row for a word none of whose tokens is stored."""
        found = {w: self._cache.get(w) for w in words}  # a local copy: other threads may clear the cache
        new = [w for w, v in found.items() if v is None]
        if len(self._cache) + len(new) > 100_000:  # a bound for a bot that runs for months
            self._cache.clear()
        for word, ids in zip(new, embedder.token_ids(new) if new else []):
            v = np.zeros(self._vectors.shape[1], np.float32)
            rows = [self._row[t] for t in ids if t in self._row]
            if rows:
                v = self._vectors[rows].astype(np.float32).mean(0)
                norm = np.linalg.norm(v)
                v = v / norm if norm else v
            found[word] = self._cache[word] = v
        if not words:
            return np.zeros((0, self._vectors.shape[1]), np.float32)
        return np.stack([found[w] for w in words])
