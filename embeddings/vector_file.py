"""The vectors of a large index as files beside it, in the shape they are searched in.

Loading 1M passages' vectors from SQLite reads 768 MB of blobs one article at a time, copies them
into one matrix and quantizes it again; this folder holds the result, used where it lies (no load
time, and pages the kernel can share and reclaim): the scan's int8 codes as faiss index files,
memory-mapped (384 MB at 1M passages, read by questions with filters), each shard's prefilter
(its product-quantized copy, read into memory: 96 MB at 1M passages), the float16 values (read
with pread, only the rows a question rescores), the per-dimension scale, the passage ids in row
order and the article of each block of rows. Derived data like the tantivy copy (derived.py): written after the index job's
commit from one snapshot, used only when its tag matches the snapshot a search reads; otherwise
the vectors are loaded from SQLite as before.
"""

from __future__ import annotations

import logging
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from . import derived, store
from .vectors import DTYPE, VectorMatrix, checked_scale, prefilter_of, wants_prefilter

log = logging.getLogger(__name__)

SUFFIX = ".vectors"
SHARD_FILE = "codes-{}.faiss"
PREFILTER_FILE = "prefilter-{}.faiss"
# Hashed on every load (8 bytes a passage): the files that say which passage, and which article,
# each row is; a bit flipped in them would put one article's text under another's title.
SMALL_FILES = ["ids.npy", "owners.npy", "scale.npy"]


def folder_for(index_path: Path) -> Path:
    return derived.folder_for(index_path, SUFFIX)


def vector_source(index_path: Path, generation: str | None, passages: int) -> str:
    """Where a search of this index state loads its vectors from: "sqlite", "vector file", or
    SQLite with the reason the file is not used."""
    if passages < derived.LARGE_INDEX:
        return "sqlite"
    why = derived.why_not_used(folder_for(index_path), generation, "vector file")
    return "vector file" if why is None else f"sqlite ({why})"


@dataclass
class Loaded:
    vectors: VectorMatrix
    passage_ids: np.ndarray
    owners: list[int]  # article ids, in row order


def refresh(index_path: Path) -> str:
    """Write the folder for index_path's committed state when it is large and the folder is not
    current or does not verify (derived.verify: every file's hash); remove it when the index is
    small. Says what was done ("built again (why)" when a current copy was damaged)."""
    folder = folder_for(index_path)
    with store.reading(index_path) as conn:
        conn.execute("BEGIN")  # tag and vectors from one snapshot
        meta = store.read_meta(conn)
        generation, passages = meta.get("generation"), store.passage_count(conn)
        if passages < derived.LARGE_INDEX or not generation or not meta.get("dimension"):
            return derived.remove(folder)
        dim = int(meta["dimension"])
        damage = None
        if derived.is_current(folder, generation):
            damage = derived.verify(folder)
            if damage is None:
                if derived.changed_files(folder):
                    derived.restamp(folder)  # the same bytes with new modification times (a copied folder)
                if load(index_path, generation, passages, dim):
                    return "current"
                damage = "it cannot be loaded"
        derived.replace(folder, lambda tmp: _write(conn, tmp, passages, dim), generation)
    return f"built again ({damage})" if damage else "built"


def _write(conn, folder: Path, passages: int, dim: int) -> None:
    exact = np.lib.format.open_memmap(folder / "exact.npy", mode="w+", dtype=DTYPE, shape=(passages, dim))
    owners, _ = store.read_vectors_into(conn, exact)
    damaged, scale = checked_scale(exact)
    if len(damaged):  # the index job embeds their articles again before it comes here: this is new damage
        raise ValueError(f"{len(damaged)} stored vectors are damaged; the next `corpus-bot index` embeds them again")
    np.save(folder / "owners.npy", np.array(owners, np.int64))
    np.save(folder / "ids.npy", store.passage_ids_by_row(conn))
    matrix = VectorMatrix(exact, scale)
    np.save(folder / "scale.npy", matrix.scale)
    for n, shard in enumerate(matrix.shards):
        faiss.write_index(shard, str(folder / SHARD_FILE.format(n)))
        prefilter = prefilter_of(shard)
        if prefilter is not None:
            faiss.write_index(prefilter, str(folder / PREFILTER_FILE.format(n)))
    exact.flush()
    del matrix, exact


def load(index_path: Path, generation: str | None, passages: int, dim: int) -> Loaded | None:
    """The vectors from the folder, or None when it is missing, stale or does not fit the snapshot."""
    folder = folder_for(index_path)
    if not generation or not folder.is_dir():
        return None
    try:
        with derived.pinned(folder) as pinned:  # every file from one copy, even if a re-index swaps in another
            if not derived.is_current(pinned, generation):
                log.info(
                    "loading vectors from SQLite: %s is from another state of the index (run `corpus-bot index`)",
                    folder,
                )
                return None
            damage = derived.changed_files(pinned) or derived.verify(pinned, SMALL_FILES)
            if damage:
                raise ValueError(f"it is damaged ({damage}; `corpus-bot index` writes it again)")
            exact = RowFile(pinned / "exact.npy")
            ids, owners, scale = (np.load(pinned / f"{name}.npy") for name in ("ids", "owners", "scale"))
            if not (exact.shape == (passages, dim) and ids.shape == (passages,) and scale.shape == (dim,)):
                raise ValueError(f"shapes {exact.shape}, {ids.shape}, {scale.shape} for {passages} x {dim}")
            files = sorted(pinned.glob(SHARD_FILE.format("*")), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
            shards = [_mapped_shard(path) for path in files]
            prefilters = [_prefilter(pinned / PREFILTER_FILE.format(n), shard) for n, shard in enumerate(shards)]
        return Loaded(VectorMatrix(exact, scale, shards, prefilters), ids, owners.tolist())
    except (OSError, ValueError, RuntimeError) as exc:  # faiss raises RuntimeError on a bad file
        log.warning("loading vectors from SQLite: cannot use %s: %s", folder, exc)
        return None


class RowFile:
    """The rows of a 2-d .npy file, read on demand with pread. A question rescores a few hundred
    scattered rows: read this way they stay in the page cache, shared and reclaimable, instead of
    growing the process's memory row by row as a memory map's pages would (the whole 768 MB at
    1M passages after a few hundred keyword questions)."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 (open for as long as the reader lives)
        fmt = np.lib.format
        version = fmt.read_magic(self._file)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        self.shape, fortran, self.dtype = read_header(self._file)
        if fortran or len(self.shape) != 2:
            raise ValueError(f"{path.name} is not a row-major matrix")
        self._offset = self._file.tell()
        self._row_bytes = self.shape[1] * self.dtype.itemsize
        size = os.fstat(self._file.fileno()).st_size
        if size != self._offset + self.shape[0] * self._row_bytes:
            raise ValueError(f"{path.name} holds {size} bytes, not {self.shape[0]} rows")
        os.posix_fadvise(self._file.fileno(), 0, 0, os.POSIX_FADV_WILLNEED)  # into the page cache, not this process

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        out = np.empty((len(rows), self.shape[1]), self.dtype)
        if not len(rows):  # a memoryview of an empty array cannot be cast
            return out
        buffers = memoryview(out).cast("B")
        fd = self._file.fileno()
        for i, row in enumerate(rows.tolist()):
            at = i * self._row_bytes
            os.preadv(fd, [buffers[at : at + self._row_bytes]], self._offset + row * self._row_bytes)
        return out


def _prefilter(path: Path, shard: faiss.Index) -> faiss.Index | None:
    """A shard's prefilter, in memory (96 MB at 1M passages); a folder written before prefilters
    existed is missing it and is written again (refresh) rather than searched slowly."""
    if not wants_prefilter(shard):
        return None
    if not path.exists():
        raise ValueError(f"{path.name} is missing (written by an older version)")
    prefilter = faiss.read_index(str(path))
    if not isinstance(prefilter, faiss.IndexPQFastScan):
        raise ValueError(f"{path.name} is not a prefilter")
    return prefilter


def _mapped_shard(path: Path) -> faiss.Index:
    """A scan shard whose codes stay in the file, memory-mapped: pages the kernel may share and
    reclaim. A question with filters reads all of them, any other its candidates' rows, so they are
    paged in now (from the page cache: a few ms at 1M passages, 0.25 s from disk) rather than
    by the first questions."""
    shard = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
    if (
        not isinstance(shard, faiss.IndexScalarQuantizer)
        or shard.sq.qtype != faiss.ScalarQuantizer.QT_8bit_direct_signed
    ):
        raise ValueError(f"{path.name} is not an int8 scan shard")
    size = shard.ntotal * shard.code_size
    if size:
        int(np.asarray(faiss.rev_swig_ptr(shard.codes.data(), size))[:: mmap.PAGESIZE].sum())
    return shard
