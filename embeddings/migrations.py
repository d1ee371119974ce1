"""Named, numbered schema migrations, tracked with PRAGMA user_version (the number of migrations applied).

Append new migrations (SQL, or a function for data changes SQL cannot make); never edit one that has
shipped. Each runs in its own transaction.
"""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import NotAnIndexError, SchemaTooNewError

VECTOR_DTYPE = np.float16  # of the article_vectors blobs since migration 4


def _vectors_to_float16(conn: sqlite3.Connection) -> None:
    """4: store vectors as float16: half the file and half the bytes to load; searching float16
    finds the same passages (embeddings/vectors.py)."""
    rows = conn.execute("SELECT article_id, vectors FROM article_vectors").fetchall()
    conn.executemany(
        "UPDATE article_vectors SET vectors = ? WHERE article_id = ?",
        [(np.frombuffer(blob, np.float32).astype(VECTOR_DTYPE).tobytes(), article_id) for article_id, blob in rows],
    )


def _authors_in_keyword_context(conn: sqlite3.Connection) -> None:
    """6: the keyword index's context column holds the article's authors as well as its title and
    publication, so "What did Jason Ditz write?" finds his article. The insert trigger is replaced
    and every passage's row rewritten; the generation changes, so that derived copies made from the
    old keyword index (the tantivy copy) are rebuilt by the next index run, never mixed with it."""
    context = (
        "trim(coalesce(a.title, '') || ' ' || coalesce(a.source, '') || ' ' || "
        "coalesce((SELECT group_concat(value, ' ') FROM json_each(a.authors)), ''))"
    )
    conn.execute("DROP TRIGGER passages_fts_insert")
    conn.execute(f"""
        CREATE TRIGGER passages_fts_insert AFTER INSERT ON passages BEGIN
            INSERT INTO passage_fts(rowid, text, context)
            SELECT new.id, new.text, {context} FROM articles a WHERE a.id = new.article_id;
        END""")
    conn.execute("DELETE FROM passage_fts")
    conn.execute(f"""
        INSERT INTO passage_fts(rowid, text, context)
        SELECT p.id, p.text, {context} FROM passages p JOIN articles a ON a.id = p.article_id""")
    conn.execute("UPDATE index_meta SET value = ? WHERE key = 'generation'", (uuid.uuid4().hex,))


def embedded_hash(text: str) -> str:
    """The hash of a text as given to the model (passages.embedded_hash, migration 7): a passage
    whose text has it already has a vector in the index."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _embedded_hashes_and_record_keys(conn: sqlite3.Connection) -> None:
    """7: each passage's embedded_hash (its text is what was embedded), so that moved, re-keyed and
    copied passages reuse their stored vectors. The records of .json/.jsonl files were keyed by
    their place ("file.jsonl#3"); they are now keyed by their id or content (parse.record_key):
    their files' hashes are cleared so that the next index run reads them again and keys them anew,
    reusing every vector."""
    conn.create_function("embedded_hash", 1, embedded_hash, deterministic=True)
    conn.execute("ALTER TABLE passages ADD COLUMN embedded_hash TEXT")
    conn.execute("UPDATE passages SET embedded_hash = embedded_hash(text)")
    conn.execute("CREATE INDEX passages_embedded_hash ON passages(embedded_hash)")
    placed = [
        article_id
        for article_id, key, file in conn.execute(
            "SELECT id, key, file FROM articles WHERE lower(file) LIKE '%.json' OR lower(file) LIKE '%.jsonl'"
        )
        if key.startswith(file + "#") and key[len(file) + 1 :].isdigit()
    ]
    conn.executemany("UPDATE articles SET content_hash = '' WHERE id = ?", [(i,) for i in placed])


@dataclass(frozen=True)
class Migration:
    """One schema step: its name says what it changes; `step` is SQL or a function of the connection."""

    name: str
    step: str | Callable[[sqlite3.Connection], None]

    def apply(self, conn: sqlite3.Connection) -> None:
        if callable(self.step):
            self.step(conn)
        else:  # executescript would commit on its own: statement by statement inside the caller's transaction
            for statement in _statements(self.step):
                conn.execute(statement)


MIGRATIONS: list[Migration] = [
    # 1: articles, passages, per-article vector blobs, index metadata, run history.
    Migration(
        "articles_passages_and_vectors",
        """
    CREATE TABLE index_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE articles (
        id            INTEGER PRIMARY KEY,
        key           TEXT NOT NULL UNIQUE,   -- corpus-relative path, '#N' appended for JSON records
        file          TEXT NOT NULL,          -- corpus-relative path of the file it came from
        content_hash  TEXT NOT NULL,          -- sha256 of the file and its sidecar
        title         TEXT,
        source        TEXT,
        authors       TEXT NOT NULL DEFAULT '[]',  -- JSON list
        published     TEXT,                   -- YYYY-MM-DD or NULL (undated)
        updated       TEXT,
        url           TEXT,
        description   TEXT,
        passage_count INTEGER NOT NULL,
        indexed_at    TEXT NOT NULL
    );
    CREATE INDEX articles_file ON articles(file);
    CREATE TABLE passages (
        id         INTEGER PRIMARY KEY,
        article_id INTEGER NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
        position   INTEGER NOT NULL,          -- 0-based order in the article
        text       TEXT NOT NULL,
        UNIQUE (article_id, position)
    );
    -- One blob per article (passage_count x dimension float32, in position order): loading every
    -- vector is one sequential scan of a few large rows rather than a row per passage.
    CREATE TABLE article_vectors (
        article_id INTEGER PRIMARY KEY REFERENCES articles(id) ON DELETE CASCADE,
        vectors    BLOB NOT NULL
    );
    CREATE TABLE index_runs (
        id       INTEGER PRIMARY KEY,
        started  TEXT NOT NULL,
        finished TEXT NOT NULL,
        seconds  REAL NOT NULL,
        report   TEXT NOT NULL                -- JSON IndexReport
    );
    """,
    ),
    # 2: keyword index over passages, with the article's title and publication as a second column.
    # A plain FTS5 table (it keeps its own copy of the text): this SQLite (3.40) has no
    # contentless_delete, and external content would need the old title on every delete. Triggers
    # keep it in the same transaction as the passages, so the two can never disagree.
    Migration(
        "keyword_index",
        """
    CREATE VIRTUAL TABLE passage_fts USING fts5(
        text, context, tokenize = 'porter unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER passages_fts_insert AFTER INSERT ON passages BEGIN
        INSERT INTO passage_fts(rowid, text, context)
        SELECT new.id, new.text, trim(coalesce(a.title, '') || ' ' || coalesce(a.source, ''))
        FROM articles a WHERE a.id = new.article_id;
    END;
    CREATE TRIGGER passages_fts_delete AFTER DELETE ON passages BEGIN
        DELETE FROM passage_fts WHERE rowid = old.id;
    END;
    INSERT INTO passage_fts(rowid, text, context)
        SELECT p.id, p.text, trim(coalesce(a.title, '') || ' ' || coalesce(a.source, ''))
        FROM passages p JOIN articles a ON a.id = p.article_id;
    """,
    ),
    # 3: votes on answers (bot 👍/👎), exportable as an evaluation set.
    Migration(
        "feedback_votes",
        """
    CREATE TABLE feedback (
        id       INTEGER PRIMARY KEY,
        created  TEXT NOT NULL,
        user_id  TEXT NOT NULL,
        question TEXT NOT NULL,
        mode     TEXT NOT NULL,
        vote     INTEGER NOT NULL CHECK (vote IN (-1, 1)),
        results  TEXT NOT NULL                -- JSON [{"path", "position", "text"}] as shown, best first
    );
    """,
    ),
    Migration("vectors_as_float16", _vectors_to_float16),
    # 5: the vectors of the vocabulary tokens of the corpus's words, float16 (word_vectors.py);
    # an index from before it gets them on its next index run.
    Migration(
        "token_vectors",
        """
    CREATE TABLE token_vectors (
        token  INTEGER PRIMARY KEY,
        vector BLOB NOT NULL
    );
    """,
    ),
    Migration("authors_in_keyword_context", _authors_in_keyword_context),
    Migration("embedded_hashes_and_record_keys", _embedded_hashes_and_record_keys),
    # 8: questions asked in Discord whose answer was weak (embeddings/gaps.py): what the corpus lacks.
    Migration(
        "weak_questions",
        """
    CREATE TABLE weak_questions (
        id       INTEGER PRIMARY KEY,
        asked    TEXT NOT NULL,               -- UTC, ISO 8601
        guild_id TEXT,                        -- the server; NULL when asked in a direct message
        user_id  TEXT,                        -- NULL unless RECORD_ASKERS=1
        question TEXT NOT NULL
    );
    CREATE INDEX weak_questions_asked ON weak_questions(asked);
    """,
    ),
]

SCHEMA_VERSION = len(MIGRATIONS)

# Written into the SQLite header (PRAGMA application_id) by every migration: it marks the file as
# a corpus-bot index, so a file that is not one is refused before anything is written to it.
APPLICATION_ID = 0x43426F74  # "CBot"
# An index from before the mark is recognised by these tables (migration 1 made them).
_INDEX_TABLES = frozenset({"index_meta", "articles", "passages", "article_vectors", "index_runs"})


def classify(conn: sqlite3.Connection) -> tuple[str, list[str]]:
    """("index", []) for a corpus-bot index, ("empty", []) for a database with nothing in it (a new
    index may be made there), ("foreign", its tables) for anything else. Reads only."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = sorted(
        name
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    )
    if app_id == APPLICATION_ID:
        return "index", []
    if app_id == 0 and version == 0 and not tables:
        return "empty", []
    if app_id == 0 and version > 0 and set(tables) >= _INDEX_TABLES:
        return "index", []
    return "foreign", tables


def not_an_index(path: object, tables: list[str], app_id: int = 0) -> NotAnIndexError:
    if tables:
        shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
        why = f"it holds another program's tables: {shown}"
    elif app_id:
        why = f"its SQLite application id is {app_id:#x}, another program's"
    else:
        why = "it is another program's SQLite database"
    return NotAnIndexError(
        f"{path} is not a corpus-bot index ({why}); it was left unchanged. "
        "Set INDEX_PATH (or --index) to a corpus-bot index or to a new file"
    )


def too_new(version: int) -> SchemaTooNewError:
    return SchemaTooNewError(
        f"the index was written by a newer corpus-bot (schema {version}, this one knows {SCHEMA_VERSION}); "
        "upgrade corpus-bot"
    )


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the index on conn to SCHEMA_VERSION, one migration per transaction. Safe when several
    processes migrate at once: the version is read again once each transaction holds the write
    lock, so a step another process has just made is not made twice. A database that is not a
    corpus-bot index is refused before anything is written."""
    if (
        conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        and conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    ):
        return  # current: no write lock needed
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            kind, tables = classify(conn)
            if kind == "foreign":
                path = conn.execute("PRAGMA database_list").fetchone()[2] or "the database"
                raise not_an_index(path, tables, conn.execute("PRAGMA application_id").fetchone()[0])
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise too_new(version)
            if version < SCHEMA_VERSION:
                MIGRATIONS[version].apply(conn)
                conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if version + 1 >= SCHEMA_VERSION:
            return


def _statements(script: str) -> list[str]:
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return [s for s in out if s]
