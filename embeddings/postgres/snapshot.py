"""One state of the index in PostgreSQL, read through several connections at once.

The first connection's REPEATABLE READ READ ONLY transaction is exported (pg_export_snapshot) and
every other connection's transaction starts on it (SET TRANSACTION SNAPSHOT), so all of them see
exactly what one index run committed, and the server works on a question's keyword side and its
vector side, or on two questions, at the same time. The transactions last until close().
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager

from . import store

# Reads that can run at once: a question's keyword side (in a thread, while the question is
# embedded) and its vector search, or two questions. Each is a connection to the server.
CONNECTIONS = 2

# Settings of every connection's transaction.
_SETTINGS = (
    # A filtered HNSW search goes on scanning until it has the rows asked (pgvector 0.8): results
    # come slightly out of order, and are re-sorted on their exact cosines (search.py).
    "SET LOCAL hnsw.iterative_scan = relaxed_order",
    # Tuples an iterative scan visits before it gives up; a search left short is asked again
    # exactly (search.py), so this bounds the cost, never the results.
    "SET LOCAL hnsw.max_scan_tuples = {max_scan_tuples}",
)
MAX_SCAN_TUPLES = 100_000


class Snapshot:
    """Connections on one snapshot of the index at url, lent one at a time (connection())."""

    def __init__(self, url: str, connections: int = CONNECTIONS) -> None:
        self._all: list = []
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        try:
            first = self._open(url)
            store.check_schema(first, url)
            self._begin(first)
            (exported,) = first.execute("SELECT pg_export_snapshot()").fetchone()
            for _ in range(connections - 1):
                self._begin(self._open(url), exported)
        except BaseException:
            self.close()
            raise
        for conn in self._all:
            self._free.put(conn)

    def _open(self, url: str):
        conn = store.connect(url, migrate_schema=False)
        self._all.append(conn)
        return conn

    @staticmethod
    def _begin(conn, exported: str | None = None) -> None:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if exported is not None:  # before any other statement of the transaction
            conn.execute(f"SET TRANSACTION SNAPSHOT '{exported}'")  # the server's own id: no quote in it
        for setting in _SETTINGS:
            conn.execute(setting.format(max_scan_tuples=MAX_SCAN_TUPLES))

    @contextmanager
    def connection(self) -> Iterator:
        """A connection of the snapshot, this thread's until the block ends (another thread waits)."""
        conn = self._free.get()
        try:
            yield conn
        finally:
            self._free.put(conn)

    def execute(self, sql: str, params=(), **kwargs) -> list:
        """Every row of one statement, read through a free connection."""
        with self.connection() as conn:
            return conn.execute(sql, params, **kwargs).fetchall()

    def close(self) -> None:
        for conn in self._all:
            conn.close()
