"""The index in a PostgreSQL database: connecting from a postgresql:// URL (pgvector 0.8 or later
checked at connect), numbered migrations, the advisory lock that lets one index run at a time
write, and the reads and writes of articles and passages.

Each passage row holds its vector (halfvec, under an HNSW index made by the first run that knows
the model's dimension) and its keyword document (`search`: the text at weight A and the article's
title, publication and authors at weight B, under a GIN index), written in the same transaction,
as are the keyword postings keyword search reads, derived from those tsvectors (keywords.py).
"""

from __future__ import annotations

import datetime as dt
import json
import unicodedata
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .. import word_vectors
from ..answer import Article
from ..errors import ConfigError, IndexBusyError, IndexMissingError, NotAnIndexError, SchemaTooNewError
from ..migrations import embedded_hash
from ..store import StoredArticle, new_generation, utc_now  # noqa: F401 (re-exported)
from ..words import WORD
from . import halfvec

MIN_PGVECTOR = (0, 8)  # iterative index scans (hnsw.iterative_scan) came in 0.8
# pg_try_advisory_lock key of the index job: one run at a time per database, across hosts.
INDEX_LOCK = 0x436F72707573  # "Corpus"
CONNECT_TIMEOUT_S = 10
# How long a migration waits for a table another connection holds (a process of an older
# corpus-bot reading it) before it gives up, changing nothing: a lock request waiting longer
# would hold up every new reader of that table behind it.
MIGRATION_LOCK_TIMEOUT = "30s"
# The keyword index's text search configuration (migration 2): English stemming, as the SQLite
# index's porter tokenizer stems, and no stop words, which FTS5 keeps too.
TEXT_SEARCH_CONFIG = "corpus_bot_words"

# The order in which keyword search reads a lexeme's postings when it wants only its best few:
# (tf + IMPACT_CONTEXT * cf) / (dl + IMPACT_LENGTH), BM25's order for one word up to the corpus's
# average length and the context's weight, which it bounds (keywords.py). Changing either constant
# is a migration that rebuilds the index keyword_postings_impact.
IMPACT_CONTEXT, IMPACT_LENGTH = 0.5, 30
IMPACT = f"((tf + {IMPACT_CONTEXT}::float8 * cf) / (dl + {IMPACT_LENGTH}::float8))"

# The postings of the passages matching `where` (SQL over p, the passages), from their tsvectors.
_POSTINGS = """
    SELECT u.lexeme, p.id,
           cardinality(u.weights) - cardinality(array_remove(u.weights, 'A')),
           cardinality(array_remove(u.weights, 'A')),
           p.text_words + p.context_words
    FROM passages p, unnest(p.search) u
    WHERE {where}"""

# A lexeme's postings packed for a question that reads all of them (keywords.py): one row per
# lexeme and block of 2**BLOCK_BITS passage ids, its postings as POSTING records in passage-id
# order, made from keyword_postings (read as one value, where the btree gives one row a posting).
# An index run rewrites only the blocks its passages touch.
BLOCK_BITS = 14
_BLOCK = f"(k.passage_id >> {BLOCK_BITS})::integer"
_PACKED = (
    "string_agg(int8send(k.passage_id) || int2send(k.tf) || int2send(k.cf) || int4send(k.dl), ''::bytea "
    "ORDER BY k.passage_id)"
)
_BLOCKS = f"SELECT k.lexeme, {_BLOCK}, {_PACKED} FROM keyword_postings k GROUP BY 1, 2"
# The blocks (lexeme, block) holding postings of some `passages` (SQL giving passages' rows).
_TOUCHED = f"SELECT DISTINCT u.lexeme, (p.id >> {BLOCK_BITS})::integer FROM {{passages}} p, unnest(p.search) u"
# numpy's view of one packed posting (big-endian, as the send functions write them)
POSTING = np.dtype([("passage_id", ">i8"), ("tf", ">i2"), ("cf", ">i2"), ("dl", ">i4")])

MIGRATIONS: list[tuple[str, str]] = [
    (
        "tables",
        """
    CREATE TABLE index_meta (
        key   text PRIMARY KEY,
        value text NOT NULL
    );
    CREATE TABLE articles (
        id            bigserial PRIMARY KEY,
        key           text NOT NULL UNIQUE,
        file          text NOT NULL,
        content_hash  text NOT NULL,
        title         text,
        source        text,
        authors       jsonb NOT NULL DEFAULT '[]',
        published     date,
        updated       date,
        url           text,
        description   text,
        passage_count integer NOT NULL,
        indexed_at    text NOT NULL
    );
    CREATE INDEX articles_file ON articles(file);
    CREATE TABLE passages (
        id             bigserial PRIMARY KEY,
        article_id     bigint NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
        position       integer NOT NULL,
        text           text NOT NULL,
        embedded_hash  text NOT NULL,
        embedding      halfvec NOT NULL,
        search         tsvector NOT NULL,
        text_words     integer NOT NULL,    -- words in the text and in the context, as BM25 counts
        context_words  integer NOT NULL,    -- a document's length
        UNIQUE (article_id, position)
    );
    CREATE INDEX passages_embedded_hash ON passages(embedded_hash);
    CREATE TABLE index_runs (
        id       bigserial PRIMARY KEY,
        started  text NOT NULL,
        finished text NOT NULL,
        seconds  double precision NOT NULL,
        report   jsonb NOT NULL
    );
    """,
    ),
    (
        "keyword index",
        f"""
    CREATE TEXT SEARCH DICTIONARY corpus_bot_stem (TEMPLATE = snowball, Language = english);
    CREATE TEXT SEARCH CONFIGURATION {TEXT_SEARCH_CONFIG} (COPY = english);
    ALTER TEXT SEARCH CONFIGURATION {TEXT_SEARCH_CONFIG}
        ALTER MAPPING FOR asciiword, word, asciihword, hword, hword_asciipart, hword_part WITH corpus_bot_stem;
    CREATE INDEX passages_search ON passages USING gin (search);
    """,
    ),
    # The vectors of the vocabulary tokens of the corpus's words, float16 bytes (word_vectors.py).
    ("word vectors", "CREATE TABLE token_vectors (token integer PRIMARY KEY, vector bytea NOT NULL)"),
    # Keyword search reads postings, not tsvectors (keywords.py): each (lexeme, passage) of the
    # passages' tsvectors with its hits in the text (weight A) and the context (weight B) and the
    # passage's length, under a btree that covers them all (an index-only scan per word); each
    # lexeme's document frequency; and the corpus's size. Filled here from an existing index.
    (
        "keyword postings",
        f"""
    CREATE TABLE keyword_postings (
        lexeme     text COLLATE "C" NOT NULL,
        passage_id bigint NOT NULL,    -- no foreign key: delete_articles removes a passage's postings
        tf         smallint NOT NULL,  -- hits in the text
        cf         smallint NOT NULL,  -- hits in the context
        dl         integer NOT NULL,   -- the passage's words, text and context
        PRIMARY KEY (lexeme, passage_id) INCLUDE (tf, cf, dl)
    );
    CREATE TABLE keyword_lexemes (lexeme text COLLATE "C" PRIMARY KEY, df integer NOT NULL);
    CREATE TABLE keyword_stats (passages bigint NOT NULL, words bigint NOT NULL);
    INSERT INTO keyword_postings {_POSTINGS.format(where="TRUE")} ORDER BY 1, 2;
    CREATE INDEX keyword_postings_impact ON keyword_postings (lexeme, {IMPACT} DESC) INCLUDE (passage_id, tf, cf, dl);
    INSERT INTO keyword_lexemes SELECT lexeme, count(*) FROM keyword_postings GROUP BY lexeme;
    INSERT INTO keyword_stats SELECT count(*), coalesce(sum(text_words + context_words), 0) FROM passages;
    """,
    ),
    # Votes on the bot's answers (embeddings/feedback.py), as the SQLite index's feedback table.
    (
        "feedback",
        """
    CREATE TABLE feedback (
        id       bigserial PRIMARY KEY,
        created  text NOT NULL,
        user_id  text NOT NULL,
        question text NOT NULL,
        mode     text NOT NULL,
        vote     integer NOT NULL CHECK (vote IN (-1, 1)),
        results  text NOT NULL              -- JSON [{"path", "position", "text"}] as shown, best first
    );
    """,
    ),
    (
        "keyword blocks",
        f"""
    CREATE TABLE keyword_blocks (
        lexeme   text COLLATE "C" NOT NULL,
        block    integer NOT NULL,  -- passage_id >> BLOCK_BITS
        postings bytea NOT NULL,    -- POSTING records by passage id
        PRIMARY KEY (lexeme, block)
    );
    -- stored as is, not compressed: read in full by every question that asks for its lexeme
    ALTER TABLE keyword_blocks ALTER COLUMN postings SET STORAGE EXTERNAL;
    INSERT INTO keyword_blocks {_BLOCKS} ORDER BY 1, 2;
    """,
    ),
    # Questions asked in Discord whose answer was weak (embeddings/gaps.py), as the SQLite index's
    # weak_questions table.
    (
        "weak questions",
        """
    CREATE TABLE weak_questions (
        id       bigserial PRIMARY KEY,
        asked    text NOT NULL,             -- UTC, ISO 8601
        guild_id text,                      -- the server; NULL when asked in a direct message
        user_id  text,                      -- NULL unless RECORD_ASKERS=1
        question text NOT NULL
    );
    CREATE INDEX weak_questions_asked ON weak_questions(asked);
    """,
    ),
    # A block of postings kept in its row up to nearly a page (toast_tuple_target), not cut into
    # TOAST chunks beyond 2 kB: a question reads its blocks whole, and assembling them from
    # chunks cost the server several times what reading them from their rows does. Each block is
    # written again as a new value (one left as it is would stay in its chunks). Neither statement
    # takes a lock that waits for readers, so bots keep answering from their snapshots meanwhile.
    (
        "keyword blocks in their rows",
        """
    ALTER TABLE keyword_blocks SET (toast_tuple_target = 8160);
    UPDATE keyword_blocks SET postings = postings || ''::bytea WHERE octet_length(postings) <= 8000;
    """,
    ),
    # Every passage's id in article order, read by each snapshot as it loads (search.passage_rows):
    # from this index alone, where reading the whole table and sorting it took seconds at 1M.
    (
        "passage rows",
        """
    CREATE INDEX passages_rows ON passages (article_id, position) INCLUDE (id);
    """,
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)
_INDEX_TABLES = ("index_meta", "articles", "passages", "index_runs")
# Every table corpus-bot makes, whose sizes (with their indexes and TOAST) are the index's size.
_ALL_TABLES = (
    *_INDEX_TABLES,
    "token_vectors",
    "feedback",
    "weak_questions",
    "keyword_postings",
    "keyword_blocks",
    "keyword_lexemes",
    "keyword_stats",
    "corpus_bot_migrations",
)


def shown(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(url)
    except Exception:
        return url.split("@")[-1] if "@" in url else url
    host = parts.get("host") or "localhost"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    if host.startswith("/"):  # a Unix socket folder
        return f"postgresql://{user}/{parts.get('dbname', '')}?host={host}"
    return f"postgresql://{user}{host}{port}/{parts.get('dbname', '')}"


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].strip()


def connect(url: str, *, migrate_schema: bool = True):
    """A psycopg connection (autocommit: callers open their transactions) to the index at url, its
    schema brought up to date. Each way this can fail is one line naming the database and what to
    do; nothing is written before the checks pass."""
    try:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise ConfigError(
            "a postgresql:// index needs the postgres extra: pip install 'corpus-bot[postgres]'"
        ) from None
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(
            f"the index URL {shown(url)} is not a valid PostgreSQL URL ({_first_line(exc)}): "
            "write it as postgresql://user:password@host:5432/database"
        ) from None
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.OperationalError as exc:
        raise ConfigError(
            f"cannot connect to the PostgreSQL index at {shown(url)}: {_first_line(exc)}; "
            "check INDEX_URL (or --index): host, port, user, password and database"
        ) from None
    try:
        _check_pgvector(conn, url)
        halfvec.register(conn)
        if migrate_schema:
            migrate(conn, url)
    except BaseException:
        conn.close()
        raise
    return conn


def _check_pgvector(conn, url: str) -> None:
    import psycopg

    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if row is None:
        available = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()
        if available is None:
            raise ConfigError(
                f"the PostgreSQL server of {shown(url)} has no pgvector extension: install pgvector "
                f"{'.'.join(map(str, MIN_PGVECTOR))} or later (managed services list it as `vector`)"
            )
        if _version(available[0]) < MIN_PGVECTOR:  # refused before anything is created
            raise ConfigError(
                f"the PostgreSQL server of {shown(url)} offers pgvector {available[0]}; corpus-bot needs "
                f"{'.'.join(map(str, MIN_PGVECTOR))} or later: install a newer pgvector on the server"
            )
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            raise ConfigError(
                f"the database {shown(url)} lacks the `vector` extension and this user cannot create it "
                f"({_first_line(exc)}): run CREATE EXTENSION vector as its owner"
            ) from None
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if _version(row[0]) < MIN_PGVECTOR:
        raise ConfigError(
            f"the database {shown(url)} has pgvector {row[0]}; corpus-bot needs "
            f"{'.'.join(map(str, MIN_PGVECTOR))} or later: ALTER EXTENSION vector UPDATE"
        )


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("-")[0].split(".") if part.isdigit())


def migrate(conn, url: str) -> None:
    """Bring the database to SCHEMA_VERSION, all missing migrations in one transaction under a
    transaction-level advisory lock, so that processes connecting at once migrate it once. A
    database whose tables clash with the index's and that corpus-bot did not make is refused; a
    migration that cannot get a table's lock within MIGRATION_LOCK_TIMEOUT changes nothing."""
    import psycopg

    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (INDEX_LOCK + 1,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS corpus_bot_migrations "
            "(version integer PRIMARY KEY, name text NOT NULL, applied text NOT NULL)"
        )
        version = conn.execute("SELECT coalesce(max(version), 0) FROM corpus_bot_migrations").fetchone()[0]
        if version == 0:
            clash = [
                name
                for (name,) in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename = ANY(%s)",
                    (list(_INDEX_TABLES),),
                )
            ]
            if clash:
                raise NotAnIndexError(
                    f"{shown(url)} is not a corpus-bot index (it holds another program's tables: "
                    f"{', '.join(sorted(clash))}); it was left unchanged. Point INDEX_URL at "
                    "another database"
                )
        if version > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"the index at {shown(url)} was written by a newer corpus-bot (schema {version}, "
                f"this one knows {SCHEMA_VERSION}); upgrade corpus-bot"
            )
        # after the advisory lock: a process waiting there for another's migrations is not stuck
        conn.execute(f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT}'")
        for number, (name, sql) in enumerate(MIGRATIONS[version:], start=version + 1):
            try:
                conn.execute(sql)
            except psycopg.errors.LockNotAvailable:
                raise IndexBusyError(
                    f"the index at {shown(url)} was left at schema {version}: migration {number} ({name}) "
                    f"waited {MIGRATION_LOCK_TIMEOUT} for a table another connection holds, likely a "
                    "process of an older corpus-bot; stop or upgrade it, then run `corpus-bot index` again"
                ) from None
            conn.execute("INSERT INTO corpus_bot_migrations VALUES (%s, %s, %s)", (number, name, utc_now()))


def check_schema(conn, url: str) -> None:
    """Refuse, in one line, a database with no index yet or one whose schema is not this
    corpus-bot's: readers never migrate, only `corpus-bot index` writes."""
    version = (
        conn.execute("SELECT coalesce(max(version), 0) FROM corpus_bot_migrations").fetchone()[0]
        if conn.execute("SELECT to_regclass('corpus_bot_migrations')").fetchone()[0]
        else 0
    )
    if version == 0:
        raise IndexMissingError(f"no index at {shown(url)}: run `corpus-bot index --index URL` to build it")
    if version != SCHEMA_VERSION:
        raise IndexMissingError(
            f"the index at {shown(url)} has schema {version}, this corpus-bot uses "
            f"{SCHEMA_VERSION}: run `corpus-bot index` to bring it up to date"
        )


@contextmanager
def reading(url: str) -> Iterator:
    """A read-only use of the index at url, in one snapshot (what one index run committed, never
    half of one), closed afterwards."""
    conn = connect(url, migrate_schema=False)
    try:
        check_schema(conn, url)
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield conn
    finally:
        conn.close()


def index_stats(conn) -> dict:
    """The counts and model of the index, as embeddings.store.index_stats gives them for a file;
    its size is what its tables take in the database, with their indexes."""
    meta = read_meta(conn)
    articles, passages, size = conn.execute(
        "SELECT (SELECT count(*) FROM articles), (SELECT count(*) FROM passages), "
        "(SELECT coalesce(sum(pg_total_relation_size(to_regclass(t))), 0) FROM unnest(%s::text[]) t)",
        (list(_ALL_TABLES),),
    ).fetchone()
    return {
        "articles": articles,
        "passages": passages,
        "model": meta.get("model"),
        "dimension": int(meta["dimension"]) if meta.get("dimension") else None,
        "size_bytes": int(size),
        "built": meta.get("built"),
    }


@contextmanager
def index_lock(conn, url: str) -> Iterator[None]:
    """The index job's lock: a session advisory lock on the database, so one run at a time writes,
    from any host; released when the run ends or its connection drops."""
    if not conn.execute("SELECT pg_try_advisory_lock(%s)", (INDEX_LOCK,)).fetchone()[0]:
        raise IndexBusyError(
            f"another index run is writing to {shown(url)} (it holds the index lock); "
            "wait for it to finish and run again"
        )
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (INDEX_LOCK,))


def ensure_vector_index(conn, dimension: int) -> None:
    """Give the vector column the model's dimension and its HNSW index (cosine, halfvec), once:
    the dimension is known only when the first run has a model. Inside the caller's transaction."""
    typmod = conn.execute(
        "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'passages'::regclass AND attname = 'embedding'"
    ).fetchone()[0]
    if typmod == dimension:
        return
    conn.execute(f"ALTER TABLE passages ALTER COLUMN embedding TYPE halfvec({int(dimension)})")
    conn.execute("DROP INDEX IF EXISTS passages_embedding")
    conn.execute(
        "CREATE INDEX passages_embedding ON passages USING hnsw (embedding halfvec_cosine_ops) "
        "WITH (m = 16, ef_construction = 64)"
    )


def read_meta(conn) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM index_meta").fetchall())


def write_meta(conn, **values: object) -> None:
    conn.cursor().executemany(
        "INSERT INTO index_meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [(k, str(v)) for k, v in values.items()],
    )


@dataclass(frozen=True)
class StoredFile:
    content_hash: str
    keys: tuple[str, ...]


def stored_files(conn) -> dict[str, StoredFile]:
    files: dict[str, tuple[str, list[str]]] = {}
    for file, key, content_hash in conn.execute("SELECT file, key, content_hash FROM articles ORDER BY id"):
        files.setdefault(file, (content_hash, []))[1].append(key)
    return {f: StoredFile(h, tuple(keys)) for f, (h, keys) in files.items()}


def passage_count(conn) -> int:
    return conn.execute("SELECT count(*) FROM passages").fetchone()[0]


def keyword_text(text: str) -> str:
    """The words of a text as the SQLite index's keyword table reads them (words.WORD runs,
    casefolded, without diacritics), one space apart: PostgreSQL's parser then sees plain words,
    so a question's words and a passage's are cut the same way in both stores."""
    plain = unicodedata.normalize("NFKD", text.casefold())
    return " ".join(WORD.findall("".join(c for c in plain if not unicodedata.combining(c))))


def context_of(title: str | None, source: str | None, authors: tuple[str, ...]) -> str:
    """A passage's keyword context, as the SQLite index's passage_fts holds it: title, publication, authors."""
    return " ".join(part for part in (title or "", source or "", " ".join(authors)) if part).strip()


def insert_article(
    conn,
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
    assert vectors.shape[0] == len(passages)
    article_id = conn.execute(
        """INSERT INTO articles(key, file, content_hash, title, source, authors, published, updated, url,
                                description, passage_count, indexed_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (
            key,
            file,
            content_hash,
            title,
            source,
            json.dumps(list(authors), ensure_ascii=False),
            published,
            updated,
            url,
            description,
            len(passages),
            indexed_at,
        ),
    ).fetchone()[0]
    context = context_of(title, source, authors)
    conn.cursor().executemany(
        f"""INSERT INTO passages(article_id, position, text, embedded_hash, embedding, search, text_words,
                                 context_words)
            SELECT %s, %s, %s, %s, %b, setweight(t, 'A') || setweight(c, 'B'), {_WORDS.format("t")},
                   {_WORDS.format("c")}
            FROM (SELECT to_tsvector('{TEXT_SEARCH_CONFIG}', %s) AS t,
                         to_tsvector('{TEXT_SEARCH_CONFIG}', %s) AS c) d""",
        [
            (article_id, i, text, embedded_hash(text), halfvec.HalfVec(v), keyword_text(text), keyword_text(context))
            for i, (text, v) in enumerate(zip(passages, vectors))
        ],
    )
    _unposted.setdefault(conn, []).append(article_id)


# Words in a tsvector, counting repeats: a document's length as BM25 counts it.
_WORDS = "(SELECT coalesce(sum(array_length(positions, 1)), 0) FROM unnest({}))"


def vectors_by_embedded_hash(conn, hashes: list[str]) -> dict[str, np.ndarray]:
    """A stored vector (float32) for each of these embedded-text hashes the index has one for."""
    found: dict[str, np.ndarray] = {}
    with conn.cursor(binary=True) as cur:
        for text_hash, vector in cur.execute(
            "SELECT DISTINCT ON (embedded_hash) embedded_hash, embedding FROM passages WHERE embedded_hash = ANY(%s)",
            (hashes,),
        ):
            found[text_hash] = vector.astype(np.float32)
    return found


def record_run(conn, *, started: str, seconds: float, report: dict) -> None:
    conn.execute(
        "INSERT INTO index_runs(started, finished, seconds, report) VALUES (%s, %s, %s, %s)",
        (started, utc_now(), seconds, json.dumps(report, ensure_ascii=False)),
    )


def last_run(conn) -> dict | None:
    row = conn.execute("SELECT started, finished, seconds, report FROM index_runs ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return None
    return {"started": row[0], "finished": row[1], "seconds": row[2], "report": row[3]}


def read_articles(conn) -> list[Article]:
    return [
        Article(
            id=row[0],
            key=row[1],
            title=row[2],
            source=row[3],
            authors=tuple(row[4]),
            published=row[5],
            updated=row[6],
            url=row[7],
            passages=row[8],
        )
        for row in conn.execute(
            "SELECT id, key, title, source, authors, published, updated, url, passage_count FROM articles ORDER BY key"
        )
    ]


def stored_articles(conn, keys: list[str]) -> dict[str, StoredArticle]:
    """The stored articles with these keys, by key (as embeddings.store.stored_articles)."""
    rows = conn.execute(
        "SELECT a.key, a.title, a.source, a.authors, a.published, a.updated, a.url, a.description, "
        "array(SELECT text FROM passages WHERE article_id = a.id ORDER BY position) "
        "FROM articles a WHERE a.key = ANY(%s)",
        (keys,),
    )
    return {
        key: StoredArticle(
            key, title, source, tuple(authors), _iso(published), _iso(updated), url, description, tuple(passages)
        )
        for key, title, source, authors, published, updated, url, description, passages in rows
    }


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None


def keys_starting_with(conn, hashes: list[str]) -> dict[str, list[str]]:
    """The keys of the articles whose first passage has each of these embedded-text hashes."""
    found: dict[str, list[str]] = {}
    for text_hash, key in conn.execute(
        "SELECT p.embedded_hash, a.key FROM passages p JOIN articles a ON a.id = p.article_id "
        "WHERE p.position = 0 AND p.embedded_hash = ANY(%s) ORDER BY a.key",
        (hashes,),
    ):
        found.setdefault(text_hash, []).append(key)
    return found


# Above this share of the passages, a run's removed postings are deleted in one pass over the
# table; below it, each one by a btree probe.
DELETE_SCAN_SHARE = 0.003


def delete_articles(conn, keys: list[str]) -> None:
    """Delete these articles, their passages, and their passages' postings and share of the keyword
    counts. A few articles' postings are found by (lexeme, passage), the btree's key, from the
    passages' own tsvectors: no index on passage_id to write and keep."""
    if not keys:
        return
    if conn.execute("SELECT count(*) FROM articles WHERE NOT key = ANY(%s)", (keys,)).fetchone()[0] == 0:
        # every article (a rebuild): one pass over the keyword tables instead of a probe per posting
        conn.execute("DELETE FROM keyword_postings")
        conn.execute("DELETE FROM keyword_blocks")
        conn.execute("DELETE FROM keyword_lexemes")
        conn.execute("UPDATE keyword_stats SET passages = 0, words = 0")
        conn.execute("DELETE FROM articles")
        return
    gone = """SELECT p.* FROM articles a JOIN passages p ON p.article_id = a.id WHERE a.key = ANY(%(keys)s)"""
    removing, passages = conn.execute(
        f"SELECT (SELECT count(*) FROM ({gone}) p), (SELECT passages FROM keyword_stats)", {"keys": keys}
    ).fetchone()
    if removing > DELETE_SCAN_SHARE * passages:  # one pass over the postings costs less than a probe each
        postings = f"DELETE FROM keyword_postings WHERE passage_id IN (SELECT id FROM ({gone}) p) RETURNING lexeme"
    else:
        postings = f"""DELETE FROM keyword_postings k USING ({gone}) p, unnest(p.search) u
                       WHERE k.lexeme = u.lexeme AND k.passage_id = p.id RETURNING k.lexeme"""
    emptied = conn.execute(
        f"""WITH gone AS ({postings}),
            counts AS (SELECT lexeme, count(*) AS n FROM gone GROUP BY lexeme)
            UPDATE keyword_lexemes l SET df = l.df - c.n FROM counts c
            WHERE l.lexeme = c.lexeme RETURNING l.lexeme, l.df""",
        {"keys": keys},
    ).fetchall()
    conn.execute(
        "DELETE FROM keyword_lexemes WHERE lexeme = ANY(%s::text[]) AND df <= 0",
        ([lexeme for lexeme, df in emptied if df <= 0],),
    )
    _rewrite_blocks(conn, _TOUCHED.format(passages=f"({gone})"), {"keys": keys})
    _add_keyword_stats(conn, f"SELECT -count(*), -coalesce(sum(text_words + context_words), 0) FROM ({gone}) p", keys)
    conn.execute("DELETE FROM articles WHERE key = ANY(%s)", (keys,))


# The articles each connection's transaction has inserted and write_keyword_postings has not yet
# given postings. An id left by a transaction that rolled back names no passage, so it adds none.
_unposted: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def write_keyword_postings(conn) -> None:
    """The postings of the passages inserted by this transaction (insert_article), and their share of
    the keyword counts: once per index run, before it commits. Written in one statement in the
    btree's order, each page of it is touched once, where writing them article by article touched
    it for each article."""
    articles = _unposted.pop(conn, [])
    if not articles:
        return
    conn.execute(
        f"""WITH new AS (
                INSERT INTO keyword_postings {_POSTINGS.format(where="p.article_id = ANY(%(articles)s)")}
                ORDER BY 1, 2
                RETURNING lexeme)
            INSERT INTO keyword_lexemes SELECT lexeme, count(*) FROM new GROUP BY lexeme
            ON CONFLICT (lexeme) DO UPDATE SET df = keyword_lexemes.df + excluded.df""",
        {"articles": articles},
    )
    _add_keyword_stats(
        conn,
        "SELECT count(*), coalesce(sum(text_words + context_words), 0) FROM passages WHERE article_id = ANY(%(keys)s)",
        articles,
    )
    _rewrite_blocks(
        conn,
        _TOUCHED.format(passages="(SELECT * FROM passages WHERE article_id = ANY(%(articles)s))"),
        {"articles": articles},
    )


def rewrite_keyword_postings(conn) -> None:
    """The keyword tables made again from every passage, in the caller's transaction: after rows
    were loaded without insert_article (copy.py's bulk load)."""
    conn.execute("DELETE FROM keyword_postings")
    conn.execute("DELETE FROM keyword_lexemes")
    conn.execute(f"INSERT INTO keyword_postings {_POSTINGS.format(where='TRUE')} ORDER BY 1, 2")
    conn.execute("INSERT INTO keyword_lexemes SELECT lexeme, count(*) FROM keyword_postings GROUP BY lexeme")
    conn.execute("DELETE FROM keyword_blocks")
    conn.execute(f"INSERT INTO keyword_blocks {_BLOCKS} ORDER BY 1, 2")
    conn.execute(
        "UPDATE keyword_stats SET passages = d.n, words = d.w FROM "
        "(SELECT count(*), coalesce(sum(text_words + context_words), 0) FROM passages) AS d(n, w)"
    )


def _rewrite_blocks(conn, touched: str, params: dict) -> None:
    """The blocks named by `touched` (SQL giving lexeme, block) made again from keyword_postings, as
    they stand in this transaction; a block with no postings left is gone."""
    conn.execute(
        f"DELETE FROM keyword_blocks b USING ({touched}) t(lexeme, block) WHERE b.lexeme = t.lexeme AND b.block = t.block",
        params,
    )
    conn.execute(
        f"""INSERT INTO keyword_blocks
            SELECT k.lexeme, {_BLOCK}, {_PACKED} FROM ({touched}) t(lexeme, block)
            JOIN keyword_postings k ON k.lexeme = t.lexeme
                 AND k.passage_id >= t.block::bigint << {BLOCK_BITS}
                 AND k.passage_id < (t.block::bigint + 1) << {BLOCK_BITS}
            GROUP BY 1, 2 ORDER BY 1, 2""",
        params,
    )


def _add_keyword_stats(conn, change: str, keys: list) -> None:
    conn.execute(
        f"UPDATE keyword_stats SET passages = keyword_stats.passages + d.n, words = keyword_stats.words + d.w "
        f"FROM ({change}) AS d(n, w)",
        {"keys": keys},
    )


def move_file(conn, old: str, new: str) -> None:
    """The articles of file `old` become those of `new`, their keys renamed with it."""
    conn.execute(
        "UPDATE articles SET file = %s, key = %s || substr(key, %s) WHERE file = %s", (new, new, len(old) + 1, old)
    )


def set_content_hash(conn, keys: list[str], content_hash: str) -> None:
    conn.execute("UPDATE articles SET content_hash = %s WHERE key = ANY(%s)", (content_hash, keys))


def insert_token_vectors(conn, tokens: list[int], vectors: np.ndarray) -> None:
    conn.cursor().executemany(
        "INSERT INTO token_vectors(token, vector) VALUES (%s, %s) "
        "ON CONFLICT (token) DO UPDATE SET vector = excluded.vector",
        [(int(t), v.astype(word_vectors.DTYPE).tobytes()) for t, v in zip(tokens, vectors)],
    )
