"""The index in PostgreSQL with pgvector, for archives that outgrow one machine: store.py holds the
connection, migrations and reads and writes; search.py the keyword engine and vector source that
let SearchIndex answer from it; indexing.py the index job. Needs the `postgres` extra (psycopg)."""

from __future__ import annotations


def is_url(location: object) -> bool:
    """An index location that names a PostgreSQL database rather than an SQLite file."""
    return str(location).startswith(("postgresql://", "postgres://"))
