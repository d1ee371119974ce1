"""Where an index lives: the SQLite file at INDEX_PATH (IndexFile) or the database at INDEX_URL
(PostgresIndex), picked once from the settings by index_store().

The CLI and the bot ask it for everything that depends on the store: loading a snapshot, the
question model verified against it, the articles, the statistics, the index job, and votes
(stored and exported). Everything else they do is the same on both.

Each method takes the settings it should use (the bot's tests swap a Serving's settings).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import store
from .config import Settings
from .errors import ConfigError, CorpusBotError, IndexMissingError

if TYPE_CHECKING:  # imported where used: a command loads only what it needs
    from .answer import Answer, Article
    from .embedder import Embedder
    from .index import IndexReport
    from .search import SearchIndex

log = logging.getLogger(__name__)


class VoteNotRecorded(CorpusBotError):
    """A vote could not be stored (no index, a read-only file, an unreachable database); shown to the user."""


class IndexFile:
    """The index in the SQLite file at settings.index_path."""

    #: What reading a held snapshot may raise when the store goes away (a file cannot: it stays open).
    read_errors: tuple[type[BaseException], ...] = ()

    def location(self, settings: Settings) -> Any:
        return settings.index_path

    def shown(self, settings: Settings) -> str:
        return str(settings.index_path)

    def upgrade(self, settings: Settings) -> None:
        """An older schema brought up to date (readers never migrate; the bot does at start)."""
        store.upgrade(settings.index_path)

    def load(self, settings: Settings) -> SearchIndex:
        from .search import SearchIndex

        return SearchIndex.load(
            settings.index_path, model_name=settings.embedding_model, weak_score=settings.weak_score
        )

    def query_embedder(self, settings: Settings, meta: dict | None = None) -> Embedder:
        """The ONNX export beside the index when there is one (no torch: it starts in a fraction of
        the time), else the full model; verified against meta (the index's, read when None)."""
        from .query_model import load_query_embedder

        return load_query_embedder(settings.index_path, settings.embedding_model, meta)

    def derived(self, index: SearchIndex, settings: Settings) -> tuple[str, str]:
        """Where the snapshot's keyword search and vectors come from (the copies beside a large
        index, or SQLite while those are missing or from another generation)."""
        from . import tantivy_index, vector_file

        generation, passages = index.meta.get("generation"), index.passage_count
        return (
            tantivy_index.keyword_engine(settings.index_path, generation, passages),
            vector_file.vector_source(settings.index_path, generation, passages),
        )

    def articles(self, settings: Settings) -> list[Article]:
        with store.reading(settings.index_path) as conn:
            return store.read_articles(conn)

    def stats(self, settings: Settings) -> dict:
        """`corpus-bot stats --json`'s fields but the corpus folder: the index's size and model,
        where its keywords and vectors are read from, damaged vectors, and the last run."""
        from . import tantivy_index, vector_file

        path = settings.index_path
        with store.reading(path) as conn:
            stats = store.index_stats(conn, path)
            stats["last_run"] = store.last_run(conn)
            damaged = store.damaged_vectors(conn)
        generation = stats.pop("generation")
        stats["keyword_search"] = tantivy_index.keyword_engine(path, generation, stats["passages"])
        stats["vectors_from"] = vector_file.vector_source(path, generation, stats["passages"])
        stats["damaged_vectors"] = [{"path": key, "reason": why} for key, why in sorted(damaged.items())]
        stats["index_path"] = str(path.absolute())
        return stats

    def run_index(self, settings: Settings, **options: Any) -> IndexReport:
        from .index import run_index

        return run_index(settings, **options)

    def export_feedback(self, settings: Settings, out_dir: Path) -> dict:
        from .feedback import export_feedback

        return export_feedback(settings.index_path, out_dir)

    async def record_vote(
        self, settings: Settings, answer: Answer, *, user_id: int | str, vote: int, mode: str
    ) -> None:
        """In the file's feedback table through aiosqlite: the event loop never waits on the disk."""
        import sqlite3

        from .feedback import record_feedback

        path = settings.index_path
        if not path.is_file():  # connecting would create an empty database there
            raise VoteNotRecorded("your vote could not be recorded: there is no index file right now")
        try:
            await record_feedback(path, answer, user_id=user_id, vote=vote, mode=mode)
        except (sqlite3.Error, OSError) as exc:
            log.warning("could not record a vote in %s: %s", path, exc)
            raise VoteNotRecorded(
                "your vote could not be recorded: the index file cannot be written right now; please try again later"
            ) from None


class PostgresIndex:
    """The index in the PostgreSQL database at settings.index_url. A snapshot is one REPEATABLE
    READ READ ONLY transaction (embeddings/postgres/search.py), ended when the snapshot closes;
    there is no WAL to checkpoint and no derived copy to follow."""

    def __init__(self) -> None:
        try:
            import psycopg
        except ImportError:  # no postgres extra: the first connect says how to install it
            self.read_errors: tuple[type[BaseException], ...] = (ConfigError,)
            self._vote_errors: tuple[type[BaseException], ...] = (ConfigError,)
            return
        # A server that went away (restart, network): the held snapshot's connection is gone.
        self.read_errors = (psycopg.OperationalError, psycopg.InterfaceError, ConfigError)
        self._vote_errors = (psycopg.Error, ConfigError)

    def location(self, settings: Settings) -> Any:
        return settings.index_url

    def shown(self, settings: Settings) -> str:
        from .postgres import store as postgres_store

        return postgres_store.shown(settings.index_url)

    def upgrade(self, settings: Settings) -> None:
        """Bring an index made by an older corpus-bot to this schema; an empty database is left
        empty (the load then says there is no index yet)."""
        from .postgres import store as postgres_store

        url = settings.index_url
        conn = postgres_store.connect(url, migrate_schema=False)
        try:
            if conn.execute("SELECT to_regclass('corpus_bot_migrations')").fetchone()[0]:
                postgres_store.migrate(conn, url)
        finally:
            conn.close()

    def load(self, settings: Settings) -> SearchIndex:
        from .postgres.search import load_search_index

        return load_search_index(
            settings.index_url, model_name=settings.embedding_model, weak_score=settings.weak_score
        )

    def query_embedder(self, settings: Settings, meta: dict | None = None) -> Embedder:
        """The ONNX query model this host exported, or the full model, verified against meta (the
        index's, read when None)."""
        from .postgres import store as postgres_store
        from .postgres.search import query_embedder

        if meta is None:
            try:
                with postgres_store.reading(settings.index_url) as conn:
                    meta = postgres_store.read_meta(conn)
            except IndexMissingError:
                meta = {}
        return query_embedder(settings.embedding_model, meta, settings.index_path)

    def derived(self, index: SearchIndex, settings: Settings) -> None:
        return None  # keywords and vectors are always read from the database

    def articles(self, settings: Settings) -> list[Article]:
        from .postgres import store as postgres_store

        with postgres_store.reading(settings.index_url) as conn:
            return postgres_store.read_articles(conn)

    def stats(self, settings: Settings) -> dict:
        """IndexFile.stats' fields: keywords and vectors are always searched in the database, and
        its vector columns are typed, so no article's vectors can be damaged."""
        from .postgres import store as postgres_store

        with postgres_store.reading(settings.index_url) as conn:
            stats = postgres_store.index_stats(conn)
            stats["last_run"] = postgres_store.last_run(conn)
        stats["keyword_search"] = "postgresql full-text"
        stats["vectors_from"] = "postgresql"
        stats["damaged_vectors"] = []
        stats["index_path"] = self.shown(settings)
        return stats

    def run_index(self, settings: Settings, **options: Any) -> IndexReport:
        from .postgres.indexing import run_index

        return run_index(settings, settings.index_url, **options)

    def export_feedback(self, settings: Settings, out_dir: Path) -> dict:
        from .feedback import export_feedback_from_postgres

        return export_feedback_from_postgres(settings.index_url, out_dir)

    async def record_vote(
        self, settings: Settings, answer: Answer, *, user_id: int | str, vote: int, mode: str
    ) -> None:
        """In the database's feedback table, written from a thread: the event loop never waits."""
        import asyncio

        from .feedback import record_feedback_in_postgres

        try:
            await asyncio.to_thread(
                record_feedback_in_postgres, settings.index_url, answer, user_id=user_id, vote=vote, mode=mode
            )
        except self._vote_errors as exc:
            log.warning("could not record a vote in %s: %s", self.shown(settings), exc)
            raise VoteNotRecorded(
                "your vote could not be recorded: the index database cannot be written right now; "
                "please try again later"
            ) from None


def index_store(settings: Settings) -> IndexFile | PostgresIndex:
    """The store the settings name: INDEX_URL when set, else the file at INDEX_PATH."""
    return PostgresIndex() if settings.index_url else IndexFile()
