"""The SQLite file: connections, index metadata, and the reads and writes of articles and passages.

Writers use explicit BEGIN IMMEDIATE transactions; readers hold a read transaction while they load so
that vectors, passages and metadata always come from one committed state (WAL keeps it stable).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .answer import Article
from .errors import ConfigError, IndexDamagedError, IndexMissingError, IndexOutdatedError
from .migrations import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    VECTOR_DTYPE,
    classify,
    embedded_hash,
    migrate,
    not_an_index,
    too_new,
)
from .vectors import off_unit

BLOCK_ROWS = 4096  # rows of vectors checked at a time: bounded memory at any index size

BUSY_TIMEOUT_MS = 5000
# A passage's keyword context as passage_fts holds it (migration 6): its article's title,
# publication and authors. Copies of the keyword index (tantivy_index.py) select the same.
PASSAGE_CONTEXT = (
    "trim(coalesce(a.title, '') || ' ' || coalesce(a.source, '') || ' ' || "
    "coalesce((SELECT group_concat(value, ' ') FROM json_each(a.authors)), ''))"
)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def _configure(conn: sqlite3.Connection) -> sqlite3.Connection:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def check_index_path(path: Path) -> None:
    """A folder given as the index file is a setting to correct (SQLite would say it cannot open it,
    which reads like a full disk)."""
    if path.is_dir():
        raise ConfigError(
            f"the index path {path} is a folder (INDEX_PATH or --index): give the index file's path, "
            f"for example {path / 'index.sqlite3'}"
        )


def damage_error(exc: sqlite3.Error, path: Path) -> IndexDamagedError | None:
    """What to do about an SQLite error that means the file is damaged; None for other errors."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if not (name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB"):
        return None
    return IndexDamagedError(
        f"the index file {path} is damaged ({exc}): move it away and run `corpus-bot index` to build a new one "
        f"(`--rebuild` cannot repair it; `sqlite3 {path.name} .recover` may save its feedback votes)"
    )


@contextmanager
def damage_reported(path: Path):
    """Raise a damaged file's SQLite error as IndexDamagedError, which says what to do."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise damage_error(exc, path) or exc from None


def _marked_as_index(path: Path) -> bool:
    """The file's header names it a corpus-bot index (PRAGMA application_id). Read as an immutable
    file: no lock, no -shm, so it works in a read-only folder too. The header may be older than a
    commit still in the -wal file, but it never stops saying "a corpus-bot index" once it does."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, check_same_thread=False)
    except sqlite3.Error:
        return False
    try:
        return conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    except sqlite3.DatabaseError:  # not a database, or damaged: the full check says which
        return False
    finally:
        conn.close()


def check_owner(path: Path) -> str:
    """ "index", "empty" or "missing" (no file); raises NotAnIndexError for another program's file.
    Nothing is written: most files are told by their header alone; otherwise the schema is read on
    a connection that cannot change the file (read-only when a -wal file exists, so closing it
    cannot checkpoint that log into the file; read-write otherwise, so SQLite removes the -wal and
    -shm it makes). Only through SQLite: opening and
    closing the file any other way would drop the POSIX locks this process's connections hold on
    it (a bot's snapshot), and a writer elsewhere would then overwrite pages that snapshot reads."""
    if not path.is_file():  # a folder or a device is for the caller to report
        return "missing"
    if _marked_as_index(path):
        return "index"
    if Path(f"{path}-wal").exists():
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("BEGIN")  # one snapshot: a run creating the index may commit between two reads
        kind, tables = classify(conn)
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        conn.execute("ROLLBACK")
    except sqlite3.DatabaseError as exc:
        raise damage_error(exc, path) or exc from None
    finally:
        conn.close()
    if kind == "foreign":  # named by its application id when it has one, else by its tables
        raise not_an_index(path, [] if app_id else tables, app_id)
    return kind


def _use_wal(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode (once: it stays). Switching needs an exclusive lock, and SQLite
    answers "database is locked" at once, without its busy handler, when another process opening
    the same new file holds it: wait as for any other lock."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def connect_for_writing(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the index file. A file that is not a corpus-bot index
    is refused before anything is written to it (even WAL mode is a write)."""
    check_index_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_owner(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        _configure(conn)
        _use_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn)
    except BaseException:
        conn.close()  # e.g. a read-only folder: do not leak the handle of a long-running bot
        raise
    return conn


def connect_for_reading(path: Path) -> sqlite3.Connection:
    """Open an existing index without creating, migrating or writing anything. An index of an
    older schema is refused (`corpus-bot index`, or the bot at start through upgrade(), brings it
    up to date): reading it as is would need every reader to know every older schema."""
    check_index_path(path)
    if check_owner(path) == "missing":
        raise IndexMissingError(f"no index at {path}: run `corpus-bot index` to build it")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        _configure(conn)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            raise IndexMissingError(f"{path} is not a corpus-bot index yet: run `corpus-bot index` to build it")
        if version > SCHEMA_VERSION:
            raise too_new(version)
        if version < SCHEMA_VERSION:
            raise IndexOutdatedError(
                f"the index at {path} was written by an older corpus-bot (schema {version}, this one uses "
                f"{SCHEMA_VERSION}): run `corpus-bot index` to upgrade it"
            )
    except BaseException:
        conn.close()
        raise
    return conn


def upgrade(path: Path) -> bool:
    """Migrate an existing corpus-bot index to this version's schema; for the process that owns the
    index (the bot at start: readers never migrate). True when there was an index to bring up to
    date or check; False when there is none (no file, or an empty database: nothing is created).
    Refuses another program's file, unchanged, and an index from a newer corpus-bot."""
    if check_owner(path) != "index":
        return False
    connect_for_writing(path).close()
    return True


@contextmanager
def reading(path: Path):
    """A read-only use of the index file, closed afterwards."""
    with damage_reported(path):
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


def _blob_problem(blob, count: int, dim: int) -> str | None:
    """Why an article's vector blob cannot hold its `count` passages' vectors (None when it can)."""
    if blob is None:
        return "it has no vectors"
    if not isinstance(blob, bytes):
        return f"its vectors are stored as {type(blob).__name__}, not a blob"
    width = dim * np.dtype(VECTOR_DTYPE).itemsize
    if len(blob) != count * width:
        return f"it has {len(blob) / width:g} vectors for {count} passages"
    return None


def _vector_rows(conn: sqlite3.Connection):
    """(article id, key, passage count, vector blob) of every article, in article id order (the
    row order of a loaded index); the blob is None when the article has none."""
    return conn.execute(
        "SELECT a.id, a.key, a.passage_count, v.vectors FROM articles a "
        "LEFT JOIN article_vectors v ON v.article_id = a.id ORDER BY a.id"
    )


def read_vectors_into(conn: sqlite3.Connection, out: np.ndarray) -> tuple[list[int], dict[int, str]]:
    """Fill out (passages x dim float16) with every article's vectors in article id order (the
    row order of a loaded index), each article at the rows its passage count gives it. Returns
    the article ids in that order, and the articles whose blob does not hold one vector per
    passage, with why: their rows are left zero (vectors.checked_scale leaves them out)."""
    owners, unusable, row = [], {}, 0
    for article_id, _, count, blob in _vector_rows(conn):
        if row + count > len(out):
            raise ValueError(f"the articles count more passages than the {len(out)} expected")
        problem = _blob_problem(blob, count, out.shape[1])
        if problem:
            out[row : row + count] = 0
            unusable[article_id] = problem
        else:
            out[row : row + count] = np.frombuffer(blob, dtype=out.dtype).reshape(count, out.shape[1])
        row += count
        owners.append(article_id)
    if row != len(out):
        raise ValueError(f"{len(out)} passages but the articles count {row}")
    return owners, unusable


def damaged_vectors(conn: sqlite3.Connection) -> dict[str, str]:
    """Articles (by key) whose stored vectors cannot be searched, and why: a blob that does not hold
    one vector per passage, or vectors that are not unit vectors (vectors.off_unit). Reads every
    blob, a block of rows at a time: the index job's check, which embeds these articles again."""
    dim = int(read_meta(conn).get("dimension") or 0)
    damaged: dict[str, str] = {}
    if not dim:
        return damaged
    block = np.empty((BLOCK_ROWS, dim), VECTOR_DTYPE)
    spans: list[tuple[str, int, int]] = []  # (key, first row in block, passages)
    filled = 0

    def check() -> None:
        off = off_unit(block[:filled])
        if off.any():
            for key, start, count in spans:
                if n := int(off[start : start + count].sum()):
                    damaged[key] = f"{n} of its {count} vectors are not unit vectors"
        spans.clear()

    for _, key, count, blob in _vector_rows(conn):
        problem = _blob_problem(blob, count, dim)
        if problem:
            damaged[key] = problem
            continue
        vectors = np.frombuffer(blob, VECTOR_DTYPE).reshape(count, dim)
        if filled + count > BLOCK_ROWS:
            check()
            filled = 0
        if count > BLOCK_ROWS:  # an article longer than a block is checked on its own
            if n := int(off_unit(vectors).sum()):
                damaged[key] = f"{n} of its {count} vectors are not unit vectors"
            continue
        block[filled : filled + count] = vectors
        spans.append((key, filled, count))
        filled += count
    check()
    return damaged


def passage_ids_by_row(conn: sqlite3.Connection) -> np.ndarray:
    """Passage ids in the row order of read_vectors_into."""
    return np.fromiter(
        (pid for (pid,) in conn.execute("SELECT id FROM passages ORDER BY article_id, position")), dtype=np.int64
    )


def passage_ids_of(conn: sqlite3.Connection, keys: list[str]) -> list[int]:
    """Ids of the passages of the articles with these keys."""
    return [
        pid
        for (pid,) in conn.execute(
            "SELECT p.id FROM passages p JOIN articles a ON a.id = p.article_id WHERE a.key IN (SELECT value FROM json_each(?))",
            (json.dumps(keys),),
        )
    ]


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
            key,
            file,
            content_hash,
            title,
            source,
            json.dumps(list(authors), ensure_ascii=False),
            published.isoformat() if published else None,
            updated.isoformat() if updated else None,
            url,
            description,
            len(passages),
            indexed_at,
        ),
    )
    article_id = cur.lastrowid
    conn.executemany(
        "INSERT INTO passages(article_id, position, text, embedded_hash) VALUES (?, ?, ?, ?)",
        [(article_id, i, text, embedded_hash(text)) for i, text in enumerate(passages)],
    )
    conn.execute(
        "INSERT INTO article_vectors(article_id, vectors) VALUES (?, ?)",
        (article_id, vectors.astype(VECTOR_DTYPE).tobytes()),
    )


def vectors_by_embedded_hash(conn: sqlite3.Connection, hashes: list[str], dim: int) -> dict[str, np.ndarray]:
    """A stored vector (float32) for each of these embedded-text hashes the index has one for.
    Only from blobs that hold one unit vector per passage: a blob with any damage (wrong length, a
    vector that is not a unit vector) may hide more, so its texts are embedded again."""
    found: dict[str, np.ndarray] = {}
    for start in range(0, len(hashes), 2_000):
        rows = conn.execute(
            "SELECT p.article_id, p.position, p.embedded_hash FROM passages p "
            "WHERE p.embedded_hash IN (SELECT value FROM json_each(?))",
            (json.dumps(hashes[start : start + 2_000]),),
        ).fetchall()
        wanted: dict[int, list[tuple[int, str]]] = {}
        for article_id, position, text_hash in rows:
            wanted.setdefault(article_id, []).append((position, text_hash))
        for article_id, count, blob in conn.execute(
            "SELECT a.id, a.passage_count, v.vectors FROM articles a JOIN article_vectors v ON v.article_id = a.id "
            "WHERE a.id IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(wanted)),),
        ):
            if _blob_problem(blob, count, dim) or not count:
                continue
            vectors = np.frombuffer(blob, VECTOR_DTYPE).reshape(count, dim)
            if off_unit(vectors).any():
                continue
            for position, text_hash in wanted[article_id]:
                if position < count:
                    found.setdefault(text_hash, vectors[position].astype(np.float32))
    return found


@dataclass(frozen=True)
class StoredArticle:
    """What an article shows and quotes: two with the same are the same article (index._same)."""

    key: str
    title: str | None
    source: str | None
    authors: tuple[str, ...]
    published: str | None
    updated: str | None
    url: str | None
    description: str | None
    passages: tuple[str, ...]


def stored_articles(conn: sqlite3.Connection, keys: list[str]) -> dict[str, StoredArticle]:
    """The stored articles with these keys, by key."""
    found: dict[str, StoredArticle] = {}
    for start in range(0, len(keys), 10_000):
        rows = conn.execute(
            "SELECT a.key, a.title, a.source, a.authors, a.published, a.updated, a.url, a.description, "
            "(SELECT json_group_array(text) FROM (SELECT text FROM passages WHERE article_id = a.id ORDER BY position)) "
            "FROM articles a WHERE a.key IN (SELECT value FROM json_each(?))",
            (json.dumps(keys[start : start + 10_000]),),
        )
        for key, title, source, authors, published, updated, url, description, passages in rows:
            found[key] = StoredArticle(
                key,
                title,
                source,
                tuple(json.loads(authors)),
                published,
                updated,
                url,
                description,
                tuple(json.loads(passages)),
            )
    return found


def keys_starting_with(conn: sqlite3.Connection, hashes: list[str]) -> dict[str, list[str]]:
    """The keys of the articles whose first passage has each of these embedded-text hashes."""
    found: dict[str, list[str]] = {}
    rows = conn.execute(
        "SELECT p.embedded_hash, a.key FROM passages p JOIN articles a ON a.id = p.article_id "
        "WHERE p.position = 0 AND p.embedded_hash IN (SELECT value FROM json_each(?)) ORDER BY a.key",
        (json.dumps(hashes),),
    )
    for text_hash, key in rows:
        found.setdefault(text_hash, []).append(key)
    return found


def move_file(conn: sqlite3.Connection, old: str, new: str) -> None:
    """The articles of file `old` become those of `new`, their keys renamed with it (vectors and
    passages stay as they are)."""
    conn.execute(
        "UPDATE articles SET file = ?, key = ? || substr(key, ?) WHERE file = ?", (new, new, len(old) + 1, old)
    )


def set_content_hash(conn: sqlite3.Connection, keys: list[str], content_hash: str) -> None:
    conn.execute(
        "UPDATE articles SET content_hash = ? WHERE key IN (SELECT value FROM json_each(?))",
        (content_hash, json.dumps(keys)),
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
            id=row[0],
            key=row[1],
            title=row[2],
            source=row[3],
            authors=tuple(json.loads(row[4])),
            published=dt.date.fromisoformat(row[5]) if row[5] else None,
            updated=dt.date.fromisoformat(row[6]) if row[6] else None,
            url=row[7],
            passages=row[8],
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
