"""Reliability of the index file: crashes, two runs at once, a full disk, a read-only index.

Failures are provoked for real (SIGKILL, a second process holding the flock, RLIMIT_FSIZE so the
kernel refuses writes with EFBIG, an unprivileged user facing root-owned files) and each test then
checks what the user sees (one `Error: ...` line, never a traceback) and that the previous index
still answers. The CLI runs in a subprocess wherever the failure needs a process of its own; those
subprocesses use the fake embedder through HARNESS (the real CLI entry point with only
`load_embedder` swapped), except where the real `corpus-bot` script is known to fail before any
model is loaded. See docs/reliability.md for the figures.
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import cli
from embeddings import store
from embeddings.errors import IndexWriteError
from embeddings.index import run_index
from tests.helpers import ROOT

# The real `corpus-bot` command line (bot.cli:main) with the deterministic fake embedder, so a
# subprocess starts in ~0.3 s instead of importing torch and loading the model. TEST_EMBED_GATE=<path>
# makes encode() create <path>.waiting and wait until <path> exists: a run that holds the lock for
# exactly as long as a test needs.
HARNESS = f"""
import os, sys, time
sys.path.insert(0, {str(ROOT)!r})
from tests.helpers import FakeEmbedder
import embeddings.index, embeddings.query_model

class GatedEmbedder(FakeEmbedder):
    def encode(self, texts, *, on_batch=None):
        gate = os.environ.get("TEST_EMBED_GATE")
        if gate:
            open(gate + ".waiting", "w").close()
            deadline = time.monotonic() + 60
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.01)
        return super().encode(texts, on_batch=on_batch)

fake = GatedEmbedder()
embeddings.index.load_embedder = embeddings.query_model.load_embedder = lambda name, **_: fake
from bot.cli import main
main()
"""

CORPUS_BOT = Path(sys.executable).with_name("corpus-bot")
ZEBRA = "A herd of zebras crossed the Kunduz road on Monday, officials said, and traffic stopped for an hour."


def corpus_bot_command() -> list[str]:
    """The installed console script when there is one (as a user runs it), else the same entry point."""
    if CORPUS_BOT.exists():
        return [str(CORPUS_BOT)]
    return [sys.executable, "-c", "from bot.cli import main; main()"]


def env_for(settings, **extra) -> dict[str, str]:
    env = {
        **os.environ,
        "CORPUS_DIR": str(settings.corpus_dir),
        "INDEX_PATH": str(settings.index_path),
        "EMBEDDING_MODEL": settings.embedding_model,
        "WEAK_SCORE": "0.2",
        "RERANK_MODEL": "",
    }
    env.pop("CORPUS_BOT_CRASH_AT", None)
    env.update(extra)
    return env


def harness(tmp_path: Path, *args: str, env: dict, **kwargs) -> subprocess.CompletedProcess:
    script = tmp_path / "harness.py"
    if not script.exists():
        script.write_text(HARNESS)
    return subprocess.run(
        [sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=120, **kwargs
    )


def invoke(settings, *args, input=None):
    env = {
        k: v
        for k, v in env_for(settings).items()
        if k in ("CORPUS_DIR", "INDEX_PATH", "EMBEDDING_MODEL", "WEAK_SCORE", "RERANK_MODEL")
    }
    return CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def assert_one_error_line(stderr: str, *fragments: str) -> str:
    """The user sees exactly one `Error: ...` line (progress lines may precede it), no traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def assert_old_index_answers(settings, *, zebra: bool = False) -> dict:
    """`corpus-bot ask` answers from a complete index; zebra says whether the new article is in it."""
    assert integrity(settings.index_path) == "ok"
    result = invoke(settings, "ask", "zebras crossed the Kunduz road", "--mode", "keyword", "-k", "20", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["results"]
    assert any("zebras" in r["text"] for r in data["results"]) == zebra
    with store.reading(settings.index_path) as conn:
        stats = store.index_stats(conn, settings.index_path)
        counted = conn.execute("SELECT COALESCE(SUM(passage_count), 0) FROM articles").fetchone()[0]
    assert stats["passages"] == counted  # every article has all of its passages
    return stats


def add_bulk_articles(corpus: Path, count: int = 20) -> None:
    words = "alpha beta gamma delta kunduz kabul river mountain council province".split()
    for i in range(count):
        paras = [
            f"Report {i}-{j}: " + " ".join(words[(i + j + n) % len(words)] for n in range(60)) + "." for j in range(40)
        ]
        (corpus / f"bulk_{i:02}.txt").write_text(f"Bulk article {i}\n\n" + "\n\n".join(paras))


def add_zebra_article(corpus: Path) -> None:
    (corpus / "zz_zebra.txt").write_text(
        "Zebras on the Kunduz road\n\n" + ZEBRA + "\n\n" + ZEBRA.replace("Monday", "Tuesday") + "\n"
    )


# ------------------------------------------------------------------------------ crash + CLI ask


@pytest.mark.parametrize("stage", ["parse", "mid-embed", "embed", "mid-write", "before-commit", "after-commit"])
def test_after_a_killed_run_the_cli_answers_and_the_next_run_reports_correctly(fake_settings, tmp_path, stage):
    """The CLI in a fresh process view of the crash test in test_integration.py (which checks the
    index in-process with the real model): `corpus-bot ask` answers, `corpus-bot index` repairs."""
    run_index(fake_settings)
    add_zebra_article(fake_settings.corpus_dir)
    (fake_settings.corpus_dir / "004_df801900fabe096f.txt").unlink()

    crashed = harness(tmp_path, "index", env=env_for(fake_settings, CORPUS_BOT_CRASH_AT=stage))
    assert crashed.returncode == -9, crashed.stderr[-2000:]

    committed = stage == "after-commit"
    stats = assert_old_index_answers(fake_settings, zebra=committed)
    assert stats["articles"] == 5  # 5 old, or 4 old + the zebra article: never 4 or 6

    result = invoke(fake_settings, "index", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    if committed:
        assert report["added"] == report["removed"] == [] and report["passages_embedded"] == 0
    else:
        assert report["added"] == ["zz_zebra.txt"] and report["removed"] == ["004_df801900fabe096f.txt"]
    assert_old_index_answers(fake_settings, zebra=True)


# ------------------------------------------------------------------------------ two runs at once


def test_a_second_cli_index_run_is_told_it_is_busy_and_the_first_one_completes(fake_settings, tmp_path):
    run_index(fake_settings)
    add_zebra_article(fake_settings.corpus_dir)
    gate = tmp_path / "gate"
    (tmp_path / "harness.py").write_text(HARNESS)
    first = subprocess.Popen(
        [sys.executable, str(tmp_path / "harness.py"), "index", "--json"],
        env=env_for(fake_settings, TEST_EMBED_GATE=str(gate)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not Path(f"{gate}.waiting").exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never reached the embedding stage"
            time.sleep(0.02)

        # The first run holds the lock (mid-embedding). A second, independent `corpus-bot index`:
        started = time.monotonic()
        second = subprocess.run(
            [*corpus_bot_command(), "index"], env=env_for(fake_settings), capture_output=True, text=True, timeout=120
        )
        busy_seconds = time.monotonic() - started
        assert second.returncode == 1
        line = assert_one_error_line(second.stderr, "another index run is in progress", f"pid {first.pid}")
        assert second.stdout == ""
        print(f"busy refusal: {busy_seconds * 1000:.0f} ms, {line!r}")
        # Meanwhile questions are answered from the old index.
        assert_old_index_answers(fake_settings, zebra=False)
    finally:
        gate.touch()
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    report = json.loads(out)
    assert report["added"] == ["zz_zebra.txt"] and report["articles_total"] == 6
    assert_old_index_answers(fake_settings, zebra=True)
    # And the lock is free again: the next run works and has nothing to do.
    again = invoke(fake_settings, "index", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["passages_embedded"] == 0


# ------------------------------------------------------------------------------ full disk


def test_a_write_refused_by_the_kernel_is_one_clear_error_and_the_old_index_keeps_serving(fake_settings, tmp_path):
    """RLIMIT_FSIZE makes every write past 512 KB fail with EFBIG (root is not exempt, and Python
    ignores SIGXFSZ): the same failure path as a full disk for SQLite (an I/O error mid-transaction)."""
    run_index(fake_settings)
    add_bulk_articles(fake_settings.corpus_dir)  # ~800 passages: far more than 512 KB of WAL
    with store.reading(fake_settings.index_path) as conn:
        before = {a.key for a in store.read_articles(conn)}
    limit = 512 * 1024
    assert fake_settings.index_path.stat().st_size < limit * 2

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    started = time.monotonic()
    failed = harness(tmp_path, "index", env=env_for(fake_settings), preexec_fn=limit_file_size)
    seconds = time.monotonic() - started
    assert failed.returncode == 1, failed.stderr
    line = assert_one_error_line(failed.stderr, "could not write the index", "the previous index is unchanged")
    assert "disk full" in line
    print(f"write refused after {seconds:.2f}s: {line!r}")

    stats = assert_old_index_answers(fake_settings, zebra=False)
    assert stats["articles"] == len(before) == 5
    # With room again, the next run indexes everything.
    result = invoke(fake_settings, "index", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["added"]) == 20


def test_a_full_database_is_reported_as_a_full_disk(fake_settings, monkeypatch):
    """SQLITE_FULL for real (max_page_count leaves no room for the new pages), in-process."""
    run_index(fake_settings)
    add_bulk_articles(fake_settings.corpus_dir, 5)
    connect = store.connect_for_writing

    def cramped(path):
        conn = connect(path)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    monkeypatch.setattr(store, "connect_for_writing", cramped)
    with pytest.raises(IndexWriteError, match="the disk is full"):
        run_index(fake_settings)
    result = invoke(fake_settings, "index")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "could not write the index", "the disk is full", "previous index is unchanged")
    monkeypatch.setattr(store, "connect_for_writing", connect)
    assert_old_index_answers(fake_settings, zebra=False)
    assert len(run_index(fake_settings).added) == 5


# ------------------------------------------------------------------------------ read-only index


def without_root_powers():
    """A preexec_fn for the child. Root ignores permission bits (CAP_DAC_OVERRIDE). The child keeps
    uid 0, so it can still run this interpreter, but drops the capabilities that bypass permissions:
    root-owned 0444/0555 then mean read-only to it, as they would to the bot's own user. libc is
    loaded here, in the parent; the child only calls prctl."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def drop() -> None:
        for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone from the exec'd program
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return drop


@pytest.mark.parametrize("what", ["index file", "index folder", "lock file"])
def test_a_read_only_index_is_one_clear_error_before_any_work_and_the_old_index_keeps_serving(fake_settings, what):
    settings = fake_settings
    run_index(settings)
    add_zebra_article(settings.corpus_dir)
    data = settings.index_path.parent
    settings.index_path.chmod(0o444)
    if what == "index folder":  # SQLite cannot create its -wal/-shm beside the index
        data.chmod(0o555)
    elif what == "lock file":  # not even the lock file can be created
        (data / "index.sqlite3.lock").unlink()
        data.chmod(0o555)

    started = time.monotonic()
    try:
        # The real console script: the error must come before the (absent) model is ever loaded.
        result = subprocess.run(
            [*corpus_bot_command(), "index"],
            env=env_for(settings),
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=without_root_powers() if os.geteuid() == 0 else None,
        )
    except subprocess.SubprocessError as exc:
        pytest.skip(f"cannot drop root's permission override here: {exc}")
    finally:
        seconds = time.monotonic() - started
        data.chmod(0o755)
    assert result.returncode == 1, result.stderr
    line = assert_one_error_line(
        result.stderr, f"could not write the index at {settings.index_path}", "the previous index is unchanged"
    )
    assert "read-only" in line or "lock file" in line
    assert "embedding" not in result.stderr  # refused before any parsing or embedding
    print(f"read-only {what}: refused in {seconds * 1000:.0f} ms: {line!r}")

    assert_old_index_answers(settings, zebra=False)
    settings.index_path.chmod(0o644)
    assert run_index(settings).added == ["zz_zebra.txt"]
