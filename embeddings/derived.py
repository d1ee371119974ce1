"""Folders of derived data beside the SQLite file, tagged with the index state they were made from.

The SQLite file is the source of truth; a large index also gets copies of its data in shapes that
are faster to search or to load (tantivy_index.py, vector_file.py). Each copy is made after the
index job's commit, from one read snapshot, and its folder holds a `generation` file naming the
index_meta generation of that snapshot. A reader uses a copy only when the tag equals the
generation of the snapshot it reads; anything else (missing, stale, half-written) is ignored.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

TAG_FILE = "generation"


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
        write_tag(tmp, generation)
        _fsync(tmp / TAG_FILE)
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
