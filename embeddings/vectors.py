"""Passage vectors: scanned as int8 codes, ranked by their float16 values.

A question is answered in two steps. faiss scans one byte per dimension (int8 codes, scaled per
dimension; its SIMD kernel for 8-bit direct codes multiplies integers, the question's included)
for k + max(k, 32) candidates, in shards searched by parallel threads (faiss releases the GIL);
then the candidates are scored exactly on their float16 vectors. The scan reads half the bytes of
a float16 scan (1M passages x 384 dimensions: 384 MB instead of 768), and the rescoring keeps the
ranking that of exact search: recall@10 against float32 was 1.0 at twice the asked depth on the
1M synthetic vectors and the real 10k benchmark corpus, 0.999 in the benchmark (bench/README.md).

On a large index both come from the vector file (embeddings/vector_file.py): the codes memory-
mapped, the float16 values read row by row (only the rows rescored). There a question without
filters does not scan every code: a product-quantized copy of each shard (two dimensions per
4-bit code, 96 bytes a vector for 384 dimensions; faiss's fast-scan kernel, which looks its codes
up in registers) picks PREFILTER_MIN candidates or more, and only their int8 codes are scored. At
1M passages that took 8-10 ms against 37-57 ms for scanning the codes, and missed none of the
exact float32 top 10 (bench/README.md).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np

DTYPE = np.float16
SHARD_MIN_ROWS = 50_000  # below this, one thread is faster than handing work to another
RESCORE_MARGIN = 32  # candidates scanned beyond k (at least k more), then rescored exactly
CHUNK = 65_536  # rows quantized at a time: bounded temporary memory at any size
CHECK_ROWS = 4096  # rows checked at a time (checked_scale): 6 MB of float32, within the CPU's cache
PREFILTER_MIN_ROWS = 10_000  # shards smaller than this are scanned whole (a few ms at most)
PREFILTER_MIN = 1024  # candidates per shard the prefilter hands to the int8 scoring, at least...
PREFILTER_FACTOR = 8  # ...and at least this many times the rows asked of the shard
PREFILTER_TRAINING_ROWS = 8192
PREFILTER_SEED = 1234
# How far a stored vector's norm may be from 1: float16 rounding moves it a little; one flipped
# bit in an exponent by far more (it made one passage the best answer to unrelated questions).
NORM_TOLERANCE = 0.01

log = logging.getLogger(__name__)

_pool: ThreadPoolExecutor | None = None


def _one_openmp_thread() -> None:
    # Each shard has its own thread already: faiss's OpenMP threads on top fight them for the
    # cores and make the scan slower.
    faiss.omp_set_num_threads(1)


def _threads() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(
            max_workers=os.cpu_count() or 1, thread_name_prefix="vector-shard", initializer=_one_openmp_thread
        )
    return _pool


def scale_of(exact: np.ndarray) -> np.ndarray:
    """Per-dimension factors that map each dimension's largest magnitude to 127."""
    largest = np.zeros(exact.shape[1], np.float32)
    for lo in range(0, len(exact), CHUNK):
        np.maximum(largest, np.abs(exact[lo : lo + CHUNK]).max(axis=0).astype(np.float32), out=largest)
    return (127.0 / np.maximum(largest, 1e-6)).astype(np.float32)


def off_unit(block: np.ndarray) -> np.ndarray:
    """Which rows of block are not unit vectors: a value that is not finite, or a norm outside
    1 +/- NORM_TOLERANCE. Damage a search must not trust."""
    values = np.asarray(block, np.float32)
    squares = np.einsum("ij,ij->i", values, values)
    return ~((squares >= (1 - NORM_TOLERANCE) ** 2) & (squares <= (1 + NORM_TOLERANCE) ** 2))  # NaN fails both


def checked_scale(exact: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of exact that are not unit vectors (off_unit), zeroed in place so that they match
    nothing and cannot set a dimension's scale, and scale_of the others. In the pass scale_of
    makes anyway, so the check costs nothing more (docs/reliability.md)."""
    largest = np.zeros(exact.shape[1], np.float32)
    damaged = []
    buffer = np.empty((CHECK_ROWS, exact.shape[1]), np.float32)  # reused: it stays in the CPU's cache
    for lo in range(0, len(exact), CHECK_ROWS):
        block = buffer[: min(CHECK_ROWS, len(exact) - lo)]
        np.copyto(block, exact[lo : lo + len(block)], casting="unsafe")
        off = off_unit(block)
        if off.any():
            rows = np.nonzero(off)[0]
            exact[lo + rows] = 0
            block[rows] = 0
            damaged.append(rows + lo)
        np.abs(block, out=block)
        np.maximum(largest, block.max(axis=0, initial=0.0), out=largest)
    rows = np.concatenate(damaged) if damaged else np.zeros(0, np.int64)
    return rows, (127.0 / np.maximum(largest, 1e-6)).astype(np.float32)


def encode(block: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """faiss's 8-bit direct signed codes of a block: round(x * scale) + 128, as bytes."""
    values = np.clip(np.rint(block.astype(np.float32) * scale), -127, 127)
    return (values + 128).astype(np.uint8)


def _codes(shard: faiss.IndexScalarQuantizer) -> np.ndarray:
    return np.asarray(faiss.rev_swig_ptr(shard.codes.data(), shard.ntotal * shard.d)).reshape(shard.ntotal, shard.d)


def wants_prefilter(shard: faiss.Index) -> bool:
    """Whether a shard gets a prefilter: not when it is small, or of an odd dimension."""
    return shard.ntotal >= PREFILTER_MIN_ROWS and shard.d % 2 == 0


def prefilter_of(shard: faiss.IndexScalarQuantizer) -> faiss.Index | None:
    """The product-quantized copy of an int8 shard that picks its candidates (None where
    wants_prefilter says no). It quantizes the vectors as the codes hold them (scaled per
    dimension), so it takes the same integer query as the shard."""
    if not wants_prefilter(shard):
        return None
    codes = _codes(shard)
    prefilter = faiss.IndexPQFastScan(shard.d, shard.d // 2, 4, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(PREFILTER_SEED).choice(
        shard.ntotal, min(shard.ntotal, PREFILTER_TRAINING_ROWS), replace=False
    )
    prefilter.train(np.subtract(codes[np.sort(sample)], 128, dtype=np.float32))
    for lo in range(0, shard.ntotal, CHUNK):
        prefilter.add(np.subtract(codes[lo : lo + CHUNK], 128, dtype=np.float32))
    return prefilter


class VectorMatrix:
    """rows x dim unit vectors: exact float16 values and their int8 codes, read only once built.

    The scan's shards (faiss indexes over consecutive rows, e.g. memory-mapped from the vector
    file) and scale may be given; otherwise they are computed from exact. So may each shard's
    prefilter (prefilter_of; None where a shard has none)."""

    def __init__(
        self,
        exact: np.ndarray,
        scale: np.ndarray | None = None,
        shards: list[faiss.Index] | None = None,
        prefilters: list[faiss.Index | None] | None = None,
    ) -> None:
        self.exact = exact
        self.rows, self.dim = exact.shape
        self._damaged_seen: set[int] = set()  # rows get() found damaged, each logged once
        self.scale = scale_of(exact) if scale is None else np.asarray(scale, np.float32)
        if shards is None:
            count = max(1, min(os.cpu_count() or 1, self.rows // SHARD_MIN_ROWS))
            bounds = np.linspace(0, self.rows, count + 1).astype(np.int64)
            shards = [self._encoded(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        self.shards = shards
        self._starts = np.concatenate([[0], np.cumsum([s.ntotal for s in shards])]).astype(np.int64)
        if self._starts[-1] != self.rows or any(s.d != self.dim for s in shards):
            raise ValueError(
                f"the scan's shards hold {self._starts[-1]} vectors of {shards[0].d if shards else '?'} "
                f"dimensions, not {self.rows} of {self.dim}"
            )
        prefilters = prefilters or [None] * len(shards)
        if len(prefilters) != len(shards) or any(
            p is not None and (p.ntotal, p.d) != (s.ntotal, s.d) for p, s in zip(prefilters, shards)
        ):
            raise ValueError("the prefilters do not match the scan's shards")
        # The prefilter's candidates scored on the shard's int8 codes, inside faiss.
        self._refined = [faiss.IndexRefine(p, s) if p is not None else None for p, s in zip(prefilters, shards)]

    def _encoded(self, lo: int, hi: int) -> faiss.Index:
        shard = faiss.IndexScalarQuantizer(
            self.dim, faiss.ScalarQuantizer.QT_8bit_direct_signed, faiss.METRIC_INNER_PRODUCT
        )
        shard.codes.resize((hi - lo) * self.dim)
        shard.ntotal = hi - lo
        if hi > lo:  # filled in place, in chunks: no second copy of the codes, ever
            view = np.asarray(faiss.rev_swig_ptr(shard.codes.data(), (hi - lo) * self.dim)).reshape(hi - lo, self.dim)
            for a in range(lo, hi, CHUNK):
                b = min(a + CHUNK, hi)
                view[a - lo : b - lo] = encode(self.exact[a:b], self.scale)
        return shard

    def __len__(self) -> int:
        return self.rows

    def get(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of the given rows, as float32; a row that is not a unit vector (damaged
        in the vector file since it was written) as zeros, which match nothing."""
        rows = np.asarray(rows, dtype=np.int64)
        values = self.exact[rows].astype(np.float32)
        off = off_unit(values) if len(values) else np.zeros(0, bool)
        if off.any():
            values[off] = 0
            new = set(rows[off].tolist()) - self._damaged_seen
            if new:
                self._damaged_seen |= new
                log.warning(
                    "vectors of %d passages (rows %s) are damaged; they match nothing until "
                    "`corpus-bot index` writes the vectors again",
                    len(new),
                    sorted(new)[:10],
                )
        return values

    def read_ahead(self, rows: np.ndarray) -> None:
        """Nothing to do: the codes approx() decodes are in memory."""

    def approx(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of the given rows as their int8 codes hold them (cosine to the exact
        vector about 0.999): decoded from the scan's shards, in memory, where get() reads float16
        rows from the vector file one by one (4 ms for 400 rows at 1M passages)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), np.float32)
        shard_of = np.searchsorted(self._starts, rows, side="right") - 1
        for s in np.unique(shard_of):
            lo, shard = int(self._starts[s]), self.shards[s]
            here = shard_of == s
            out[here] = _codes(shard)[rows[here] - lo]
        out -= 128.0
        out /= self.scale
        return out

    def dot(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Cosine similarity of the query to the given rows."""
        return self.get(rows) @ query.astype(np.float32)

    def _code_query(self, query: np.ndarray) -> np.ndarray:
        # The scan's kernel quantizes the query like a stored vector: hand it integers in range.
        q = query / self.scale
        largest = float(np.abs(q).max())
        return np.rint(q * (127.0 / largest) if largest else q).astype(np.float32).reshape(1, self.dim)

    def top(self, query: np.ndarray, k: int, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the k most similar vectors (only rows where keep is True) and their cosines, best first."""
        query = np.asarray(query, dtype=np.float32).reshape(self.dim)
        candidates = self.nearest_rows(query, k + max(k, RESCORE_MARGIN), keep)
        cosine = self.dot(query, candidates)
        order = np.argsort(-cosine, kind="stable")[:k]
        return candidates[order], cosine[order]

    def nearest_rows(self, query: np.ndarray, depth: int, keep: np.ndarray | None = None) -> np.ndarray:
        """Rows of the `depth` best int8 code scores (only rows where keep is True), in row order;
        nothing read from the float16 values: for a caller that rescores them itself."""
        query = np.asarray(query, dtype=np.float32).reshape(self.dim)
        depth = min(depth, self.rows if keep is None else int(keep.sum()))
        if depth <= 0:
            return np.zeros(0, np.int64)
        coded = self._code_query(query)

        def scan(s: int) -> tuple[np.ndarray, np.ndarray]:
            lo, hi = int(self._starts[s]), int(self._starts[s + 1])
            shard_k = min(depth, hi - lo)
            if shard_k <= 0:
                return np.zeros(0, np.float32), np.zeros(0, np.int64)
            if keep is None and self._refined[s] is not None:
                factor = max(PREFILTER_MIN / shard_k, PREFILTER_FACTOR)
                params = faiss.IndexRefineSearchParameters(k_factor=factor)
                scores, ids = self._refined[s].search(coded, shard_k, params=params)
            elif keep is not None:  # the prefilter cannot skip rows: filtered questions scan every code
                bitmap = np.packbits(keep[lo:hi], bitorder="little")
                params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(hi - lo, faiss.swig_ptr(bitmap)))
                scores, ids = self.shards[s].search(coded, shard_k, params=params)
                del bitmap  # kept alive until here: faiss reads it during the search
            else:
                scores, ids = self.shards[s].search(coded, shard_k)
            found = ids[0] >= 0
            return scores[0][found], ids[0][found] + lo

        parts = [scan(0)] if len(self.shards) == 1 else list(_threads().map(scan, range(len(self.shards))))
        scores = np.concatenate([p[0] for p in parts])
        candidates = np.concatenate([p[1] for p in parts])
        if len(candidates) > depth:  # the shards' codes share one scale: their scores compare
            candidates = candidates[np.argpartition(-scores, depth - 1)[:depth]]
        return np.sort(candidates)  # in row order: fewer scattered reads of a mapped file
