"""Moving an index file into PostgreSQL without embedding anything: `corpus-bot index --from
data/index.sqlite3 --index postgresql://...` copies articles, passages, vectors, word vectors, the
model's identity (index_meta) and the run history. No model is loaded.

The source is opened read-only and read in one snapshot (a run writing to it meanwhile is not
seen half-done); it is checked as every reader checks an index file (application id, schema), and
an article whose vector blob is damaged is not copied, with every article of its file, so that the
next `corpus-bot index` parses and embeds that file again (the same rule as the SQLite job).

The target is written in one transaction under the index job's advisory lock: all of the copy is
there or none of it. It must hold no index (or `rebuild`: the copy replaces it in the same
transaction); two indexes are never merged. Rows go in with COPY; the secondary indexes of
`passages` are dropped first and made again after loading, which is faster than keeping them
up to date row by row.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import index as job
from .. import store as sqlite_store
from .. import word_vectors
from ..config import Settings
from ..errors import (
    ConfigError,
    IndexMissingError,
    IndexRefusedError,
    IndexWriteError,
    ModelMismatchError,
    NotAnIndexError,
)
from ..index import IndexReport, Progress
from ..migrations import SCHEMA_VERSION, VECTOR_DTYPE, too_new
from ..words import WORD
from . import halfvec, store

SQLITE_HEADER = b"SQLite format 3\x00"
LOCK_WAIT_S = 10  # how long the copy waits for reads of the target under way before giving up
BATCH_ARTICLES = 2_000  # articles read from the file per step: bounded memory at any index size

log = logging.getLogger(__name__)


@dataclass
class CopyReport(IndexReport):
    """The index report of a copy: the copied articles are `added`, nothing is embedded, and
    `copied_from` names the index file they came from."""

    copied_from: str = ""

    def lines(self) -> list[str]:
        return [f"copied from {self.copied_from} (no model loaded)", *super().lines()]


@dataclass
class CopyProgress(Progress):
    """Progress of a copy, for the index command's reporter (stderr)."""

    articles_copied: int = 0
    articles_total: int = 0
    passages_copied: int = 0
    copy_total: int = 0  # passages to copy

    def describe(self) -> str:
        if self.stage == "indexing":
            return f"indexing: building the search indexes of {self.passages_copied} passages"
        if self.stage != "copying":
            return self.stage
        if not self.passages_copied:
            return f"copying: {self.articles_total} articles, {self.copy_total} passages"
        rate = self.passages_copied / self.elapsed if self.elapsed > 0 else 0.0
        return (
            f"copying: {self.articles_copied}/{self.articles_total} articles, "
            f"{self.passages_copied}/{self.copy_total} passages ({rate:.0f} passages/s)"
        )


def copy_index(
    settings: Settings,
    source: str | Path,
    url: str,
    *,
    rebuild: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> CopyReport:
    """Copy the index file `source` into the PostgreSQL index at url, in one transaction."""
    started_wall, started = store.utc_now(), time.monotonic()
    src = open_source(source)
    source = Path(source)
    try:
        with sqlite_store.damage_reported(source):  # the file turns out damaged while being read
            return _copy(settings, src, source, url, rebuild, on_progress, started_wall, started)
    finally:
        src.close()


def _copy(settings, src, source: Path, url: str, rebuild, on_progress, started_wall, started) -> CopyReport:
    src.execute("BEGIN")  # one snapshot for every read below
    meta = sqlite_store.read_meta(src)
    _check_source(src, meta, source, settings)
    skipped = _damaged_files(src)
    report = CopyReport(model=meta["model"], copied_from=str(source))
    for key, why in sorted(skipped.items()):
        report.warnings.append((key, f"{why}; not copied: the next `corpus-bot index` embeds it"))
    conn = store.connect(url)
    try:
        with store.index_lock(conn, url), _write_errors(url):
            _write(conn, url, src, meta, set(skipped), report, rebuild, on_progress, started_wall, started)
    finally:
        conn.close()
    return report


@contextmanager
def _write_errors(url: str) -> Iterator[None]:
    """The server's refusal of the copy (a full disk, a cancelled statement, a lost connection) as
    one line: the transaction did not commit, so the target is as it was."""
    import psycopg

    try:
        yield
    except psycopg.errors.LockNotAvailable:
        raise IndexWriteError(
            f"the PostgreSQL index at {store.shown(url)} is being read (a reader held its passages for "
            f"{LOCK_WAIT_S}s); nothing was copied: run the copy again when the reads end"
        ) from None
    except psycopg.Error as exc:
        raise IndexWriteError(
            f"could not copy into the PostgreSQL index at {store.shown(url)}: {store._first_line(exc)}; "
            "nothing was copied, the index is as it was"
        ) from None


def open_source(path: str | Path) -> sqlite3.Connection:
    """A read-only connection to the index file at path, after the checks every reader makes; each
    refusal is one line naming the file."""
    if str(path).startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"--from takes an index file (such as data/index.sqlite3), not a PostgreSQL URL "
            f"({store.shown(str(path))}): copy between databases with pg_dump"
        )
    path = Path(path)
    if not path.is_file():
        raise IndexMissingError(
            f"no index file at {path} (--from): give the path of an index file that `corpus-bot index` wrote"
            + (" (it is a folder)" if path.is_dir() else "")
        )
    try:
        with path.open("rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise ConfigError(f"cannot read the index file {path} (--from): {exc.strerror or exc}") from None
    if header != SQLITE_HEADER:
        raise NotAnIndexError(f"{path} is not a corpus-bot index (not an SQLite file); nothing was copied")
    with sqlite_store.damage_reported(path):
        if sqlite_store.check_owner(path) != "index":
            raise NotAnIndexError(f"{path} is not a corpus-bot index (an empty SQLite database); nothing was copied")
        # As check_owner opens it: read-only where a log exists (closing cannot checkpoint it into
        # the file); otherwise read-write, so that SQLite removes the log and shared-memory files
        # it makes, with query_only refusing any write.
        mode = "?mode=ro" if Path(f"{path}-wal").exists() else ""
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}{mode}", uri=True, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA query_only = ON")
            conn.execute(f"PRAGMA busy_timeout = {sqlite_store.BUSY_TIMEOUT_MS}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except BaseException:
            conn.close()
            raise
    if version > SCHEMA_VERSION:
        conn.close()
        raise too_new(version)
    if version < SCHEMA_VERSION:
        conn.close()
        raise IndexRefusedError(
            f"the index file {path} was written by an older corpus-bot (schema {version}, this one uses "
            f"{SCHEMA_VERSION}): run `corpus-bot index --index {path}` to upgrade it, then copy it"
        )
    return conn


def _check_source(src: sqlite3.Connection, meta: dict[str, str], path: Path, settings: Settings) -> None:
    if not meta.get("model") or not meta.get("dimension") or not sqlite_store.passage_count(src):
        raise IndexRefusedError(f"the index file {path} holds no passages: nothing to copy")
    if meta["model"] != settings.embedding_model:
        raise ModelMismatchError(
            f"the index file {path} was built with {meta['model']!r} but EMBEDDING_MODEL is "
            f"{settings.embedding_model!r}: set EMBEDDING_MODEL={meta['model']} to copy it (and to ask it)"
        )


def _damaged_files(src: sqlite3.Connection) -> dict[str, str]:
    """Articles not to copy, by key, with why: those whose vectors are damaged, and the other
    articles of their files, since the next run re-reads a file only when none of it is stored."""
    damaged = sqlite_store.damaged_vectors(src)
    if not damaged:
        return {}
    files = {file for key, file in src.execute("SELECT key, file FROM articles") if key in damaged}
    return {
        key: f"its stored vectors are damaged ({damaged[key]})"
        if key in damaged
        else "another article of its file has damaged vectors"
        for key, file in src.execute("SELECT key, file FROM articles")
        if file in files
    }


def _write(conn, url, src, meta, skipped, report, rebuild, on_progress, started_wall, started) -> None:
    """The copy's one transaction: all of it is in the index, or none of it."""
    dimension = int(meta["dimension"])
    progress = CopyProgress(stage="copying")
    progress.articles_total, progress.copy_total = src.execute(
        "SELECT count(*), coalesce(sum(passage_count), 0) FROM articles"
    ).fetchone()

    def tick() -> None:
        progress.elapsed = time.monotonic() - started
        if on_progress:
            on_progress(progress)

    with conn.transaction():
        _make_room(conn, url, meta, rebuild)
        # Dropping the indexes waits for reads under way and makes new ones wait behind it: give
        # up after a while rather than stall every question while a long read runs.
        conn.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT_S}s'")
        store.ensure_vector_index(conn, dimension)
        rebuilt = _drop_secondary_indexes(conn)
        conn.execute("SET LOCAL lock_timeout TO DEFAULT")
        tick()
        _copy_articles_and_passages(conn, src, skipped, dimension, progress, tick, report)
        job._fault_point("mid-write")
        _copy_token_vectors(conn, src, dimension, report)
        _copy_runs(conn, src)
        progress.stage = "indexing"
        tick()
        after_bulk_load(conn, rebuilt)
        report.articles_total = conn.execute("SELECT count(*) FROM articles").fetchone()[0]
        report.passages_total = store.passage_count(conn)
        report.seconds = round(time.monotonic() - started, 3)
        copied = dict(meta)
        if skipped:  # the copy holds less than the file: its content is not the file's generation
            copied["generation"] = store.new_generation()
        copied.setdefault("generation", store.new_generation())
        store.write_meta(conn, **copied)
        store.record_run(conn, started=started_wall, seconds=report.seconds, report=report.to_json())
        job._fault_point("before-commit")
    job._fault_point("after-commit")
    progress.stage = "done"
    tick()


def _make_room(conn, url: str, meta: dict[str, str], rebuild: bool) -> None:
    """Refuse a target that holds an index (another model's first, as the index job does), or
    with rebuild empty it, in the copy's transaction."""
    articles = conn.execute("SELECT count(*) FROM articles").fetchone()[0]
    if articles and not rebuild:
        target_model = store.read_meta(conn).get("model")
        if target_model and target_model != meta["model"]:
            raise ModelMismatchError(
                f"the PostgreSQL index at {store.shown(url)} holds {articles} articles embedded with "
                f"{target_model!r}, the file's model is {meta['model']!r}; nothing was copied. "
                "Add --rebuild to replace that index with the copy, or copy into another database"
            )
        raise IndexRefusedError(
            f"the PostgreSQL index at {store.shown(url)} already holds {articles} articles; nothing was "
            "copied (two indexes are never merged). Add --rebuild to replace it with the copy, or copy "
            "into another database"
        )
    # Emptied, not truncated: a reader's open snapshot still sees the old index until the commit.
    conn.execute("DELETE FROM articles")  # passages go with their articles
    for table in ("token_vectors", "index_meta", "index_runs"):
        conn.execute(f"DELETE FROM {table}")


def _drop_secondary_indexes(conn) -> list[tuple[str, str]]:
    """Drop the indexes of passages that no constraint needs; their names and definitions, to make
    them again."""
    rows = conn.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema() "
        "AND i.tablename = 'passages' AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
        "WHERE c.conname = i.indexname AND c.conrelid = 'passages'::regclass)"
    ).fetchall()
    for name, _ in rows:
        conn.execute(f'DROP INDEX "{name}"')
    return [(name, definition) for name, definition in rows]


def after_bulk_load(conn, indexes: list[tuple[str, str]]) -> None:
    """What follows loading rows with COPY, in the same transaction: the dropped indexes made again
    over every row at once. Tables derived from passages are filled here too, from all of them."""
    import psycopg

    passages = store.passage_count(conn)
    for name, definition in indexes:
        started = time.monotonic()
        try:
            with conn.transaction():  # a savepoint: a failed build is tried again below
                _build_memory(conn, passages)
                conn.execute(definition)
        except psycopg.errors.QueryCanceled:
            raise
        except psycopg.Error:
            # A parallel build takes its memory as shared memory, which some servers have little
            # of (a container's /dev/shm): build it again with the server's own settings, alone.
            conn.execute("SET LOCAL max_parallel_maintenance_workers = 0")
            conn.execute("RESET maintenance_work_mem")
            conn.execute(definition)
        log.info("built %s over %d passages in %.1f s", name, passages, time.monotonic() - started)
    started = time.monotonic()
    store.rewrite_keyword_postings(conn)
    log.info("wrote the keyword postings of %d passages in %.1f s", passages, time.monotonic() - started)


# Memory for building an index in one go, per passage: an HNSW graph that outgrows
# maintenance_work_mem is finished on disk, several times slower. Never below the server's setting.
BUILD_BYTES_PER_PASSAGE = 2048
MAX_BUILD_MEMORY_MB = 1024


def _build_memory(conn, passages: int) -> None:
    wanted_kb = min(passages * BUILD_BYTES_PER_PASSAGE // 1024, MAX_BUILD_MEMORY_MB * 1024)
    current_kb = conn.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'maintenance_work_mem'").fetchone()[
        0
    ]
    if wanted_kb > current_kb:
        conn.execute(f"SET LOCAL maintenance_work_mem = '{int(wanted_kb)}kB'")


def _source_articles(src: sqlite3.Connection, skipped: set[str]) -> Iterator[list[tuple]]:
    """The file's articles with their vector blobs, in id order, a batch at a time."""
    cur = src.execute(
        "SELECT a.id, a.key, a.file, a.content_hash, a.title, a.source, a.authors, a.published, a.updated, "
        "a.url, a.description, a.passage_count, a.indexed_at, v.vectors FROM articles a "
        "JOIN article_vectors v ON v.article_id = a.id ORDER BY a.id"
    )
    while batch := cur.fetchmany(BATCH_ARTICLES):
        yield [row for row in batch if row[1] not in skipped]


# A passage's keyword document and word counts, as store.insert_article writes them; each
# tsvector is computed once (OFFSET 0 keeps the planner from copying the expression into every
# use), and an article's context once for all its passages.
_WORDS = "(SELECT coalesce(sum(array_length(positions, 1)), 0) FROM unnest({}))"
_CONTEXTS = f"""
CREATE TEMP TABLE copy_context_docs ON COMMIT DROP AS
SELECT article_id, setweight(c, 'B') AS c, {_WORDS.format("c")} AS words
FROM (SELECT article_id, to_tsvector('{store.TEXT_SEARCH_CONFIG}', words) AS c FROM copy_contexts OFFSET 0) x
"""
_INSERT_PASSAGES = f"""
INSERT INTO passages(id, article_id, position, text, embedded_hash, embedding, search, text_words, context_words)
SELECT p.id, p.article_id, p.position, p.text, p.embedded_hash, p.embedding,
       setweight(d.t, 'A') || x.c, {_WORDS.format("d.t")}, x.words
FROM copy_passages p JOIN copy_context_docs x ON x.article_id = p.article_id,
     LATERAL (SELECT to_tsvector('{store.TEXT_SEARCH_CONFIG}', p.words) AS t OFFSET 0) d
"""


def _keyword_text(text: str) -> str:
    """store.keyword_text, at once for ASCII text: casefolding and removing diacritics leave it as is
    but for the case, which WORD's matches then only need lowered."""
    return " ".join(WORD.findall(text.casefold())) if text.isascii() else store.keyword_text(text)


def _copy_articles_and_passages(conn, src, skipped, dimension, progress, tick, report) -> None:
    """Articles straight into their table (ids kept: passages keep their row order); passages
    through a temporary table, from which one INSERT computes their keyword documents."""
    conn.execute(
        "CREATE TEMP TABLE copy_passages (id bigint, article_id bigint, position integer, text text, "
        f"embedded_hash text, embedding halfvec({dimension}), words text) ON COMMIT DROP"
    )
    conn.execute("CREATE TEMP TABLE copy_contexts (article_id bigint, words text) ON COMMIT DROP")
    halfvec_oid = conn.execute("SELECT 'halfvec'::regtype::oid").fetchone()[0]
    width = dimension * np.dtype(VECTOR_DTYPE).itemsize
    last = time.monotonic()
    for batch in _source_articles(src, skipped):
        if not batch:
            continue
        ids = [row[0] for row in batch]
        texts = src.execute(
            "SELECT article_id, id, position, text, embedded_hash FROM passages "
            "WHERE article_id BETWEEN ? AND ? ORDER BY article_id, position",
            (ids[0], ids[-1]),
        ).fetchall()
        by_article: dict[int, list[tuple]] = {}
        for row in texts:
            by_article.setdefault(row[0], []).append(row[1:])
        with conn.cursor().copy(
            "COPY articles(id, key, file, content_hash, title, source, authors, published, updated, url, "
            "description, passage_count, indexed_at) FROM STDIN"
        ) as copy:
            for row in batch:
                copy.write_row(row[:13])
        with conn.cursor().copy("COPY copy_contexts FROM STDIN") as copy:
            for row in batch:
                authors = tuple(json.loads(row[6]))
                copy.write_row((row[0], _keyword_text(store.context_of(row[4], row[5], authors))))
        with conn.cursor().copy("COPY copy_passages FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "int8", "int4", "text", "text", halfvec_oid, "text"])
            for row in batch:
                article_id, count, blob = row[0], row[11], row[13]
                passages = by_article.get(article_id, [])
                if len(passages) != count or len(blob) != count * width:
                    raise IndexRefusedError(
                        f"the index file's article {row[1]} counts {count} passages but holds "
                        f"{len(passages)}; nothing was copied: run `corpus-bot index` on the file first"
                    )
                vectors = np.frombuffer(blob, VECTOR_DTYPE).reshape(count, dimension)
                for (pid, position, text, text_hash), vector in zip(passages, vectors):
                    copy.write_row(
                        (pid, article_id, position, text, text_hash, halfvec.HalfVec(vector), _keyword_text(text))
                    )
                progress.passages_copied += count
        progress.articles_copied += len(batch)
        report.added.extend(row[1] for row in batch)
        if time.monotonic() - last > 1:
            last = time.monotonic()
            tick()
    conn.execute(_CONTEXTS)
    conn.execute("ANALYZE copy_passages, copy_context_docs")  # else the planner guesses a nested loop
    conn.execute(_INSERT_PASSAGES)
    for table in ("articles", "passages"):
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
        )
    report.added.sort()


def _copy_token_vectors(conn, src, dimension: int, report) -> None:
    """The word vectors that are usable (a damaged one is left out: search does without it)."""
    rows = src.execute("SELECT token, vector FROM token_vectors").fetchall()
    tokens, vectors = word_vectors._usable(rows, dimension)
    with conn.cursor().copy("COPY token_vectors(token, vector) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int4", "bytea"])
        for token, vector in zip(tokens.tolist(), vectors):
            copy.write_row((token, vector.astype(word_vectors.DTYPE).tobytes()))
    if len(tokens) < len(rows):
        report.warnings.append(("token_vectors", f"{len(rows) - len(tokens)} damaged word vectors not copied"))


def _copy_runs(conn, src) -> None:
    """The file's run history, oldest first, before the copy's own run."""
    with conn.cursor().copy("COPY index_runs(started, finished, seconds, report) FROM STDIN") as copy:
        for row in src.execute("SELECT started, finished, seconds, report FROM index_runs ORDER BY id"):
            copy.write_row(row)
