"""The index file: another program's database is refused and left byte-identical, reading never
writes or migrates, the owner upgrades an older index, and migrations started at once by several
processes are safe. Figures and rows: docs/reliability.md."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bot.cli import cli
from embeddings import store
from embeddings.errors import IndexMissingError, IndexOutdatedError, NotAnIndexError
from embeddings.index import run_index
from embeddings.migrations import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from tests.helpers import ROOT

COMMANDS = [["index"], ["index", "--rebuild"], ["ask", "bridge"], ["sources"], ["stats"], ["sources", "--json"]]


def fingerprint(path: Path) -> dict[str, str | None]:
    """The file's bytes, its -wal log's and which files lie beside it. The -shm file's bytes are left
    out: it is SQLite's shared-memory index of the log, which any reader rebuilds after a crash."""
    return {
        p.name: None if p.name.endswith("-shm") else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.parent.iterdir())
        if p.name.startswith(path.name)
    }


def content(path: Path) -> tuple[str, str]:
    """The bytes of the file and of its -wal log (none and empty alike: a reader's open connection
    keeps an empty log and the -shm index beside the file until it closes)."""
    wal = Path(f"{path}-wal")
    return (
        hashlib.sha256(path.read_bytes()).hexdigest(),
        hashlib.sha256(wal.read_bytes() if wal.exists() else b"").hexdigest(),
    )


def other_programs_database(path: Path, *, wal: bool = False, application_id: int = 0) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    if wal:
        conn.execute("PRAGMA journal_mode = WAL")
    if application_id:
        conn.execute(f"PRAGMA application_id = {application_id}")
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, total REAL)")
    conn.executemany("INSERT INTO users(name) VALUES (?)", [("ada",), ("grace",)])
    conn.execute("PRAGMA user_version = 3")
    return conn


def env_for(settings, path: Path) -> dict[str, str]:
    return {
        "CORPUS_DIR": str(settings.corpus_dir),
        "INDEX_PATH": str(path),
        "EMBEDDING_MODEL": settings.embedding_model,
        "RERANK_MODEL": "",
    }


@pytest.mark.parametrize("kind", ["rollback journal", "wal, log not checkpointed", "application id"])
def test_another_programs_database_is_refused_by_every_command_and_left_byte_identical(fake_settings, tmp_path, kind):
    path = tmp_path / "other" / "app.db"
    path.parent.mkdir()
    if kind.startswith("wal"):
        # The other program wrote in WAL mode and ended without closing: its last rows are in the
        # -wal file only, and the next connection to close would checkpoint them into app.db.
        subprocess.run(
            [
                sys.executable,
                "-c",
                textwrap.dedent(f"""
            import os, sqlite3
            from tests.test_index_file import other_programs_database
            conn = other_programs_database({str(path)!r}, wal=True)
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            conn.execute("INSERT INTO users(name) VALUES ('in the log only')")
            os._exit(0)
        """),
            ],
            cwd=ROOT,
            check=True,
        )
    else:
        other_programs_database(path, application_id=0x0F055112 if kind == "application id" else 0).close()
    before = fingerprint(path)
    assert (path.parent / "app.db-wal").exists() == kind.startswith("wal")

    for command in COMMANDS:
        result = CliRunner().invoke(cli, command, env=env_for(fake_settings, path))
        assert result.exit_code == 1, (command, result.output)
        [line] = result.stderr.splitlines()
        assert line.startswith(f"Error: {path} is not a corpus-bot index (") and "left unchanged" in line, line
        assert ("users" in line) == (kind != "application id")
        assert fingerprint(path) == before, command  # not a byte changed, no file added beside it
    for call in (store.connect_for_writing, store.connect_for_reading, store.upgrade):
        with pytest.raises(NotAnIndexError):
            call(path)
    assert fingerprint(path) == before
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA journal_mode").fetchone()[0] == ("wal" if kind.startswith("wal") else "delete")
    assert [n for (n,) in check.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["users", "orders"]
    check.close()


def test_a_new_index_is_marked_and_an_empty_database_file_may_become_one(fake_settings, tmp_path):
    empty = tmp_path / "empty.sqlite3"
    sqlite3.connect(empty).close()  # the empty file SQLite makes: nothing in it
    with pytest.raises(IndexMissingError, match="not a corpus-bot index yet"):
        store.connect_for_reading(empty)
    assert store.upgrade(empty) is False and empty.stat().st_size == 0  # nothing to upgrade, nothing made
    report = run_index(replace(fake_settings, index_path=empty))
    assert report.articles_total > 0
    with store.reading(empty) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


SCHEMA_4_TEXTS = [
    "The new bridge across the river opens to traffic next month, the council said.",
    "Floods closed the valley road for a week and the repairs will take until spring.",
]


def schema_4_index(path: Path, embedder) -> None:
    """An index as corpus-bot wrote it with migrations 1-4 and before the application id: built from
    those migrations themselves, so every later one (and any added after it) runs on upgrade."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    for number, migration in enumerate(MIGRATIONS[:4], start=1):
        migration.apply(conn)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.execute(
        "INSERT INTO index_meta VALUES ('model', ?), ('dimension', ?), ('generation', 'g4')",
        (embedder.name, str(embedder.dimension)),
    )
    for n, text in enumerate(SCHEMA_4_TEXTS, start=1):
        conn.execute(
            "INSERT INTO articles(id, key, file, content_hash, title, passage_count, indexed_at) "
            "VALUES (?, ?, ?, 'h', ?, 1, 'now')",
            (n, f"a{n}.txt", f"a{n}.txt", f"Article {n}"),
        )
        conn.execute("INSERT INTO passages(article_id, position, text) VALUES (?, 0, ?)", (n, text))
        vectors = embedder.encode([text]).astype(np.float16)
        conn.execute("INSERT INTO article_vectors VALUES (?, ?)", (n, vectors.tobytes()))
    conn.close()


def test_reading_never_writes_and_an_older_index_is_refused_until_its_owner_upgrades_it(fake_settings, fake_embedder):
    run_index(fake_settings)
    path = fake_settings.index_path
    env = env_for(fake_settings, path)
    current = content(path)
    for command in (["ask", "bridge"], ["sources"], ["stats"], ["ask", "bridge", "--json"]):
        assert CliRunner().invoke(cli, command, env=env).exit_code == 0
        assert content(path) == current, command  # a read leaves the file as it was

    path = path.with_name("schema4.sqlite3")
    env = env_for(fake_settings, path)
    schema_4_index(path, fake_embedder)
    old = content(path)
    for command in (["ask", "bridge"], ["sources"], ["stats"]):
        result = CliRunner().invoke(cli, command, env=env)
        assert result.exit_code == 1 and result.stderr.splitlines() == [
            f"Error: the index at {path} was written by an older corpus-bot (schema 4, this one uses "
            f"{SCHEMA_VERSION}): run `corpus-bot index` to upgrade it"
        ]
        assert content(path) == old, command  # before: `ask` made a table and raised user_version

    with pytest.raises(IndexOutdatedError):
        store.connect_for_reading(path)
    assert store.upgrade(path) is True  # the bot, which owns its index, calls this at start
    with store.reading(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    answer = CliRunner().invoke(cli, ["ask", "when does the bridge open", "--json"], env=env)
    assert answer.exit_code == 0 and json.loads(answer.stdout)["results"][0]["text"] == SCHEMA_4_TEXTS[0]


def test_an_index_from_before_the_mark_is_still_read_and_marked_by_the_next_run(fake_settings):
    run_index(fake_settings)
    path = fake_settings.index_path
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA application_id = 0")
    conn.close()
    with store.reading(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM articles").fetchone()[0] > 0
        assert conn.execute("PRAGMA application_id").fetchone()[0] == 0  # reading did not mark it
    run_index(fake_settings)
    with store.reading(path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


MIGRATE_AT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from embeddings import store
    start, path = float(sys.argv[1]), Path(sys.argv[2])
    while time.time() < start:
        pass
    try:
        store.connect_for_writing(path).close()
        print("ok")
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}")
""")


@pytest.mark.parametrize("state", ["new file", "schema 4"])
def test_eight_processes_migrating_at_once_all_succeed(fake_settings, fake_embedder, state):
    """Before, 1-2 of 8 processes started at once failed with "table ... already exists": each read
    the version before taking the write lock."""
    path = fake_settings.index_path
    if state == "schema 4":
        schema_4_index(path, fake_embedder)
    start = time.time() + 2.0  # every process imported and waiting, then all at once
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_AT, str(start), str(path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    outcomes = [p.communicate(timeout=60)[0].strip() for p in processes]
    assert outcomes == ["ok"] * 8, outcomes
    with store.reading(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'token_vectors'").fetchone()[0] == 1
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_checking_the_file_in_a_process_that_serves_it_keeps_its_snapshot_whole(fake_settings, fake_embedder, tmp_path):
    """A bot holds a snapshot (a read transaction) while it checks the file again (each poll, each
    load). Opening and closing the file outside SQLite dropped the process's POSIX locks, so a
    rebuild in another process overwrote pages the snapshot still read: FTS5 said 'database disk
    image is malformed'."""
    from embeddings.search import SearchIndex
    from tests.test_reliability_core import env_for, harness

    fake_index = fake_settings
    run_index(fake_index)
    index = SearchIndex.load(fake_index.index_path, model_name=fake_index.embedding_model, weak_score=0.2)
    before = [r.text for r in index.search("Kunduz", fake_embedder, mode="keyword").results]
    for _ in range(3):
        store.check_owner(fake_index.index_path)
        store.connect_for_reading(fake_index.index_path).close()
    done = harness(tmp_path, "index", "--rebuild", env=env_for(fake_index, EMBEDDING_MODEL="another-model"))
    assert done.returncode == 0, done.stderr[-500:]
    assert [r.text for r in index.search("Kunduz", fake_embedder, mode="keyword").results] == before
    index.close()


def test_every_migration_has_its_own_name():
    """A migration is found by its name in a log or a review, not only by its number."""
    names = [m.name for m in MIGRATIONS]
    assert len(set(names)) == len(names) == SCHEMA_VERSION
    assert all(n and n.isidentifier() for n in names)
