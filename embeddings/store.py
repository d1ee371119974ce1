"""The SQLite file: connections, index metadata, and the reads and writes of articles and passages.

Writers use explicit BEGIN IMMEDIATE transactions; readers hold a read transaction while they load so
that vectors, passages and metadata always come from one committed state (WAL keeps it stable).
"""
from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .answer import Article
from .errors import IndexMissingError
from .migrations import VECTOR_DTYPE, migrate

BUSY_TIMEOUT_MS = 5000
# A passage's keyword context as passage_fts holds it (migration 6): its article's title,
# publication and authors. Copies of the keyword index (tantivy_index.py) select the same.
PASSAGE_CONTEXT = ("trim(coalesce(a.title, '') || ' ' || coalesce(a.source, '') || ' ' || "
                   "coalesce((SELECT group_concat(value, ' ') FROM json_each(a.authors)), ''))")


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def _configure(conn: sqlite3.Connection) -> sqlite3.Connection:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def connect_for_writing(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the index file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        _configure(conn)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn)
    except BaseException:
        conn.close()  # e.g. a read-only folder: do not leak the handle of a long-running bot
        raise
    return conn


def connect_for_reading(path: Path) -> sqlite3.Connection:
    """Open an existing index without creating or migrating anything."""
    if not path.is_file():
        raise IndexMissingError(f"no index at {path}: run `corpus-bot index` to build it")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    _configure(conn)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:
        conn.close()
        raise IndexMissingError(f"{path} is not a corpus-bot index yet: run `corpus-bot index` to build it")
    # An older schema is upgraded in place (additive migrations); a newer one is refused by migrate().
    migrate(conn)
    return conn


@contextmanager
def reading(path: Path):
    """A read-only use of the index file, closed afterwards."""
    conn = connect_for_reading(path)
    try:
        yield conn
    finally:
        conn.close()


def read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM index_meta"))


def new_generation() -> str:
    """A fresh tag for index_meta's `generation`, which changes whenever the indexed content does."""
    return uuid.uuid4().hex


def write_meta(conn: sqlite3.Connection, **values: str) -> None:
    conn.executemany(
        "INSERT INTO index_meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [(k, str(v)) for k, v in values.items()],
    )


@dataclass(frozen=True)
class StoredFile:
    content_hash: str
    keys: tuple[str, ...]


def stored_files(conn: sqlite3.Connection) -> dict[str, StoredFile]:
    files: dict[str, tuple[str, list[str]]] = {}
    for file, key, content_hash in conn.execute("SELECT file, key, content_hash FROM articles ORDER BY id"):
        files.setdefault(file, (content_hash, []))[1].append(key)
    return {f: StoredFile(h, tuple(keys)) for f, (h, keys) in files.items()}


def passage_count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM passages").fetchone()[0]


def read_vectors_into(conn: sqlite3.Connection, out: np.ndarray) -> list[int]:
    """Fill out (passages x dim float16) with every article's vectors in article id order (the
    row order of a loaded index); return the article ids in that order."""
    owners, row = [], 0
    for article_id, blob in conn.execute("SELECT article_id, vectors FROM article_vectors ORDER BY article_id"):
        block = np.frombuffer(blob, dtype=out.dtype).reshape(-1, out.shape[1])
        if row + len(block) > len(out):
            raise ValueError("more vectors than passages")
        out[row : row + len(block)] = block
        row += len(block)
        owners.append(article_id)
    if row != len(out):
        raise ValueError(f"{len(out)} passages but {row} vectors")
    return owners


def passage_ids_by_row(conn: sqlite3.Connection) -> np.ndarray:
    """Passage ids in the row order of read_vectors_into."""
    return np.fromiter((pid for (pid,) in conn.execute("SELECT id FROM passages ORDER BY article_id, position")),
                       dtype=np.int64)


def passage_ids_of(conn: sqlite3.Connection, keys: list[str]) -> list[int]:
    """Ids of the passages of the articles with these keys."""
    return [pid for (pid,) in conn.execute(
        "SELECT p.id FROM passages p JOIN articles a ON a.id = p.article_id WHERE a.key IN (SELECT value FROM json_each(?))",
        (json.dumps(keys),),
    )]


def delete_articles(conn: sqlite3.Connection, keys: list[str]) -> None:
    conn.executemany("DELETE FROM articles WHERE key = ?", [(k,) for k in keys])


def insert_article(
    conn: sqlite3.Connection,
    *,
    key: str,
    file: str,
    content_hash: str,
    title: str | None,
    source: str | None,
    authors: tuple[str, ...],
    published: dt.date | None,
    updated: dt.date | None,
    url: str | None,
    description: str | None,
    passages: list[str],
    vectors: np.ndarray,
    indexed_at: str,
) -> None:
    assert vectors.dtype == np.float32 and vectors.shape[0] == len(passages)
    cur = conn.execute(
        """INSERT INTO articles(key, file, content_hash, title, source, authors, published, updated, url,
                                description, passage_count, indexed_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (
            key, file, content_hash, title, source, json.dumps(list(authors), ensure_ascii=False),
            published.isoformat() if published else None, updated.isoformat() if updated else None,
            url, description, len(passages), indexed_at,
        ),
    )
    article_id = cur.lastrowid
    conn.executemany(
        "INSERT INTO passages(article_id, position, text) VALUES (?, ?, ?)",
        [(article_id, i, text) for i, text in enumerate(passages)],
    )
    conn.execute(
        "INSERT INTO article_vectors(article_id, vectors) VALUES (?, ?)",
        (article_id, vectors.astype(VECTOR_DTYPE).tobytes()),
    )


def record_run(conn: sqlite3.Connection, *, started: str, seconds: float, report: dict) -> None:
    conn.execute(
        "INSERT INTO index_runs(started, finished, seconds, report) VALUES (?, ?, ?, ?)",
        (started, utc_now(), seconds, json.dumps(report, ensure_ascii=False)),
    )


def last_run(conn: sqlite3.Connection) -> dict | None:
    row = conn.execute("SELECT started, finished, seconds, report FROM index_runs ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return None
    return {"started": row[0], "finished": row[1], "seconds": row[2], "report": json.loads(row[3])}


def read_articles(conn: sqlite3.Connection) -> list[Article]:
    return [
        Article(
            id=row[0], key=row[1], title=row[2], source=row[3], authors=tuple(json.loads(row[4])),
            published=dt.date.fromisoformat(row[5]) if row[5] else None,
            updated=dt.date.fromisoformat(row[6]) if row[6] else None,
            url=row[7], passages=row[8],
        )
        for row in conn.execute(
            "SELECT id, key, title, source, authors, published, updated, url, passage_count FROM articles ORDER BY key"
        )
    ]


def index_stats(conn: sqlite3.Connection, path: Path) -> dict:
    meta = read_meta(conn)
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    return {
        "articles": conn.execute("SELECT COUNT(*) FROM articles").fetchone()[0],
        "passages": passage_count(conn),
        "model": meta.get("model"),
        "dimension": int(meta["dimension"]) if meta.get("dimension") else None,
        "size_bytes": size,
        "built": meta.get("built"),
        "generation": meta.get("generation"),
    }
