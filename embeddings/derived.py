"""Folders of derived data beside the SQLite file, tagged with the index state they were made from.

The SQLite file is the source of truth; a large index also gets copies of its data in shapes that
are faster to search or to load (tantivy_index.py, vector_file.py). Each copy is made after the
index job's commit, from one read snapshot, and its folder holds a `generation` file naming the
index_meta generation of that snapshot. A reader uses a copy only when the tag equals the
generation of the snapshot it reads; anything else (missing, stale, half-written) is ignored.

Each copy also holds the size, modification time and hash of every file in it (CHECKSUM_FILE),
written with the tag. The index job verifies every hash on each run and builds a copy that does
not match again (docs/reliability.md has the cost); a reader, which cannot afford to read it all,
uses a copy only while every file has the size and modification time it was written with
(changed_files): a write into a file since, such as a damaged block, makes it fall back.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from .model_identity import HASH, file_digest

# Passages from which an index gets its derived copies: there FTS5 takes longer than embedding the
# question, and loading the vectors from SQLite more than a few tenths of a second (bench/README.md).
LARGE_INDEX = 50_000
TAG_FILE = "generation"
CHECKSUM_FILE = "checksums.json"


def folder_for(index_path: Path, suffix: str) -> Path:
    return index_path.with_name(index_path.name + suffix)


def read_tag(folder: Path) -> str | None:
    try:
        return (folder / TAG_FILE).read_text().strip() or None
    except OSError:
        return None


def is_current(folder: Path, generation: str | None) -> bool:
    """Whether the copy in folder holds the index state `generation`."""
    return bool(generation) and read_tag(folder) == generation


def write_tag(folder: Path, value: str) -> None:
    tmp = folder / (TAG_FILE + ".tmp")
    tmp.write_text(value)
    os.replace(tmp, folder / TAG_FILE)


def _listed(folder: Path) -> list[str]:
    """The files a copy's checksums cover: its data (not the tag, the checksums, or lock files)."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file()
        and p.name not in (TAG_FILE, TAG_FILE + ".tmp", CHECKSUM_FILE, CHECKSUM_FILE + ".tmp")
        and not p.name.endswith(".lock")
    )


def _digests(folder: Path, names: list[str]) -> dict[str, str]:
    """Each file's hash, read by parallel threads (hashlib releases the GIL), the largest first."""
    by_size = sorted(names, key=lambda n: -(folder / n).stat().st_size)
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="checksum") as pool:
        return dict(zip(by_size, pool.map(lambda n: file_digest(folder / n), by_size)))


def read_checksums(folder: Path) -> dict[str, list] | None:
    """{file: [size, mtime_ns, hash]} as written with the copy; None when there are none."""
    try:
        data = json.loads((folder / CHECKSUM_FILE).read_text())
        files = data["files"] if data.get("hash") == HASH else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return files if isinstance(files, dict) else None


def write_checksums(folder: Path, known: dict[str, list] | None = None) -> None:
    """Record every file's size, modification time and hash; a hash in `known` is reused for a
    file whose size and modification time are unchanged (verified just before)."""
    known = known or {}
    names = _listed(folder)
    stats = {n: (folder / n).stat() for n in names}
    fresh = [n for n in names if known.get(n, [None, None])[:2] != [stats[n].st_size, stats[n].st_mtime_ns]]
    digests = {n: known[n][2] for n in names if n not in fresh} | _digests(folder, fresh)
    files = {n: [stats[n].st_size, stats[n].st_mtime_ns, digests[n]] for n in names}
    tmp = folder / (CHECKSUM_FILE + ".tmp")
    tmp.write_text(json.dumps({"hash": HASH, "files": files}))
    _fsync(tmp)
    os.replace(tmp, folder / CHECKSUM_FILE)


def seal(folder: Path, generation: str, known: dict[str, list] | None = None) -> None:
    """Record the checksums of the copy in folder, then tag it as holding `generation`."""
    write_checksums(folder, known)
    write_tag(folder, generation)
    _fsync(folder / TAG_FILE)


def changed_files(folder: Path) -> str | None:
    """The readers' check, from stat alone: which file no longer has the size and modification
    time it was written with (None when none)."""
    files = read_checksums(folder)
    if files is None:
        return "it has no checksums (written by an older version)"
    for name, (size, mtime_ns, _) in files.items():
        try:
            stat = (folder / name).stat()
        except OSError:
            return f"{name} is missing"
        if (stat.st_size, stat.st_mtime_ns) != (size, mtime_ns):
            return f"{name} changed since it was written"
    return None


def verify(folder: Path, names: list[str] | None = None) -> str | None:
    """The index job's check: which file (of `names`, or all) does not hash as written (None
    when all do). Reads every byte."""
    files = read_checksums(folder)
    if files is None:
        return "it has no checksums (written by an older version)"
    names = list(files) if names is None else names
    for name in names:
        if name not in files:
            return f"{name} has no checksum"
        try:
            size = (folder / name).stat().st_size
        except OSError:
            return f"{name} is missing"
        if size != files[name][0]:
            return f"{name} holds {size} bytes, not the {files[name][0]} it was written with"
    try:
        digests = _digests(folder, names)
    except OSError as exc:
        return f"a file cannot be read ({exc})"
    for name in names:
        if digests[name] != files[name][2]:
            return f"{name} is damaged (its {HASH} differs from the one it was written with)"
    return None


def restamp(folder: Path) -> None:
    """Record the files' current sizes and modification times with their hashes, once verify()
    found every hash as written (a copy copied elsewhere, say, with new modification times)."""
    files = read_checksums(folder) or {}
    known = {}
    for name, (_, _, digest) in files.items():
        stat = (folder / name).stat()
        known[name] = [stat.st_size, stat.st_mtime_ns, digest]
    write_checksums(folder, known)


def replace(folder: Path, build: Callable[[Path], None], generation: str) -> None:
    """Build a new copy in a temporary folder, tag it, and swap it in for the old one.

    A reader that opened the old copy keeps its files (open or mapped) until it closes them."""
    tmp = folder.with_name(folder.name + f".building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        # On disk before the tag says so: after a crash a tagged copy must hold what it claims.
        for path in tmp.rglob("*"):
            if path.is_file():
                _fsync(path)
        seal(tmp, generation)
        old = folder.with_name(folder.name + f".old-{os.getpid()}")
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def pinned(folder: Path) -> Iterator[Path]:
    """A path to the folder as it is now, that keeps naming it if replace() swaps in a new copy
    meanwhile (through an open directory descriptor), so a reader gets every file from one copy.
    Where /proc/self/fd does not exist, the plain path."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        via_fd = Path(f"/proc/self/fd/{fd}")
        yield via_fd if via_fd.is_dir() else folder
    finally:
        os.close(fd)


def remove(folder: Path) -> str:
    if folder.exists():
        shutil.rmtree(folder)
        return "removed"
    return "not needed"


def why_not_used(folder: Path, generation: str | None, what: str) -> str | None:
    """None when the copy in folder holds this index state and its files are as written; else why a
    search does not use it, for `stats`."""
    if not is_current(folder, generation):
        return f"the {what} is missing or out of date: run `corpus-bot index`"
    changed = changed_files(folder)
    if changed:
        return f"the {what} is damaged, {changed}: run `corpus-bot index`"
    return None
