"""What the bot watches in its index between loads: the committed generation (so it follows
index runs made outside it, e.g. `corpus-bot index` from cron) and, in the SQLite file, the
write-ahead log. `IndexWatch` watches the file, `PostgresWatch` an index in PostgreSQL.

A snapshot holds a read transaction on the file for as long as it serves, and SQLite can neither
copy the WAL back into the database past a reader's view, nor start the WAL over while a reader
uses it. So the bot checkpoints right before it loads a snapshot: when everything was copied back
and nothing committed meanwhile, the snapshot reads the database file only, and the next writer
can start the WAL from its beginning. `Serving` does the loading; this module does the SQLite.

Used from one thread at a time (the bot's upkeep thread).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from embeddings import store
from embeddings.errors import CorpusBotError, IndexMissingError

T = TypeVar("T")

log = logging.getLogger(__name__)

#: A checkpoint waits at most this long (ms) for a writer: the bot never waits on an index run.
CHECKPOINT_WAIT_MS = 100


@dataclass(frozen=True)
class Seen:
    """The index file at one poll."""

    generation: str | None  # index_meta's tag of the committed content
    commits: int  # grows with every commit made by another connection (PRAGMA data_version)
    wal_bytes: int


class IndexWatch:
    def __init__(self, path: Path) -> None:
        self.path = self.location = path
        self._conn: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None  # (device, inode) of the file _conn has open
        self._version: int | None = None
        self._commits = 0
        self._generation: str | None = None
        self._cannot_checkpoint = False

    def poll(self) -> Seen | None:
        """The committed state, cheaply: a stat, PRAGMA data_version, and the one-row generation
        read only after a commit. None when there is no index file (yet, or any more)."""
        try:
            st = os.stat(self.path)
        except OSError:
            self.close()
            return None
        if self._conn is None or self._file != (st.st_dev, st.st_ino):  # first poll, or a new file moved in
            self.close()
            try:
                self._conn = store.connect_for_reading(self.path)
            except IndexMissingError:  # not an index yet; other refusals (a newer schema) are raised
                return None
            self._conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_WAIT_MS}")
            self._file = (st.st_dev, st.st_ino)
        version = self.data_version()
        if version != self._version:
            self._version = version
            self._commits += 1
            row = self._conn.execute("SELECT value FROM index_meta WHERE key = 'generation'").fetchone()
            self._generation = row[0] if row else None
        return Seen(self._generation, self._commits, self.wal_bytes())

    def load_settled(self, load: Callable[[], T]) -> tuple[T, bool]:
        """load() right after a checkpoint, and True when the WAL was all copied back and nothing
        committed in between: what it loaded then reads the database file only and does not hold
        the WAL (else the caller loads again once the replaced snapshot has let go of it)."""
        self.poll()
        before = self.data_version()
        copied_back = self.checkpoint()
        loaded = load()
        return loaded, copied_back and before is not None and self.data_version() == before

    def wal_bytes(self) -> int:
        try:
            return os.stat(f"{self.path}-wal").st_size
        except OSError:
            return 0

    def checkpoint(self) -> bool:
        """Copy the WAL back into the database file as far as readers allow (PASSIVE: never waits
        for them). True when all of it was copied back."""
        if self._conn is None and self.poll() is None:
            return False
        try:
            busy, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # e.g. the bot may read but not write the file
            self._cannot(exc)
            return False
        return not busy and frames == copied

    def truncate(self) -> None:
        """Empty the WAL file (TRUNCATE) when no reader depends on it; give up after a moment
        when a writer holds it (the next load tries again)."""
        if self._conn is None:
            return
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            self._cannot(exc)

    def data_version(self) -> int | None:
        """Changes whenever another connection commits (None without an open file)."""
        return self._conn.execute("PRAGMA data_version").fetchone()[0] if self._conn is not None else None

    def _cannot(self, exc: sqlite3.Error) -> None:
        if not self._cannot_checkpoint:
            self._cannot_checkpoint = True
            log.info(
                "cannot checkpoint %s (%s): its WAL grows until an index run or a restart resets it", self.path, exc
            )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._file, self._version = None, None, None


class IndexUnreachable(CorpusBotError):
    """The PostgreSQL server did not answer a poll; the next poll connects again."""


class PostgresWatch:
    """The committed generation of an index in PostgreSQL: one query (a one-row read of
    index_meta) per poll over a connection of its own, in autocommit, so each poll sees the
    latest commit. There is no WAL to watch: a snapshot's REPEATABLE READ transaction ends when
    the snapshot is closed, which lets VACUUM reclaim what later runs replaced."""

    def __init__(self, url: str) -> None:
        self.location = url
        self._conn = None
        self._generation: str | None = None
        self._changes = 0

    def poll(self) -> Seen | None:
        """The committed generation; None while the database holds no index. IndexUnreachable
        (one line) when the server cannot be reached: the connection is dropped and the next poll
        makes a new one."""
        import psycopg

        from embeddings.postgres import store as postgres_store

        try:
            if self._conn is None:
                self._conn = postgres_store.connect(self.location, migrate_schema=False)
            row = self._conn.execute("SELECT value FROM index_meta WHERE key = 'generation'").fetchone()
        except psycopg.errors.UndefinedTable:
            return None  # an empty database: no index yet
        except psycopg.Error as exc:
            self.close()
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise IndexUnreachable(f"cannot read the index at {postgres_store.shown(self.location)}: {first}") from None
        if row is None:  # migrated but never written by an index run
            return None
        if row[0] != self._generation:
            self._generation = row[0]
            self._changes += 1
        return Seen(self._generation, self._changes, 0)

    def load_settled(self, load: Callable[[], T]) -> tuple[T, bool]:
        return load(), True  # nothing to release afterwards

    def truncate(self) -> None:
        """Nothing to empty: PostgreSQL has no WAL a reader holds."""

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None


def index_watch(settings) -> IndexWatch | PostgresWatch:
    """The watch of the index the settings name: INDEX_URL when set, else the file at INDEX_PATH."""
    return PostgresWatch(settings.index_url) if settings.index_url else IndexWatch(settings.index_path)
