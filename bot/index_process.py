"""/reindex's index job, run in a child process so that nothing it meets can take the bot down.

A pathological corpus file can make parsing take gigabytes, the model takes hundreds of MB that a
process keeps once allocated, and loading it in a bot thread held the event loop (the GIL) for up
to 0.7 s at a time. So each run is a child process: it loads the model, runs the index job of the
bot's store (the SQLite file's or PostgreSQL's, embeddings/stores.py), sends
its progress, its log records and its report (or refusal) back over a pipe, and exits, returning
its memory. If it dies instead (killed, out of memory, a crash in native code), the bot says how
and keeps serving: the index job's single commit leaves the previous index complete.

Children come from multiprocessing's forkserver: a small server process started once by exec,
not by fork (the bot runs thread pools, and forking a process with threads can deadlock the
child), with the index job's modules imported; each run is a fork of it, so a run starts in tens
of milliseconds instead of a second of imports. Like any multiprocessing program, a program that
runs the bot must guard its entry point with `if __name__ == "__main__":`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import replace

from embeddings.config import Settings
from embeddings.embedder import Embedder
from embeddings.errors import CorpusBotError, IndexJobError
from embeddings.index import IndexReport, Progress
from embeddings.stores import index_store

log = logging.getLogger(__name__)

#: Seconds between two progress messages from the child (every stage change is sent at once).
PROGRESS_EVERY = 0.25

EmbedderFactory = Callable[[], Embedder]


class IndexProcessDied(IndexJobError):
    """The child ended without a report (killed, out of memory, a crash); the message says how."""


class IndexProcessFailed(IndexJobError):
    """An unexpected error stopped the run in the child; its traceback is in the bot's log."""


def _context() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    # Imported once in the server rather than in every child. Applies when the server starts
    # (the first run); "__main__" is the program that runs the bot, which a child imports anyway.
    ctx.set_forkserver_preload(["__main__", __name__])
    return ctx


class IndexProcess:
    """One index run in a child process: `run()` (blocking: call it from a thread) starts it and
    waits for its outcome; `stop()` ends it from any thread."""

    def __init__(
        self, settings: Settings, *, allow_removals: bool = False, embedder_factory: EmbedderFactory | None = None
    ) -> None:
        # The child needs no Discord secret: it never gets the token.
        self.settings = replace(settings, discord_token="")
        self.allow_removals = allow_removals
        self.embedder_factory = embedder_factory
        self._process: multiprocessing.process.BaseProcess | None = None
        self._stopped = threading.Event()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def run(self, on_progress: Callable[[Progress], None]) -> IndexReport:
        """The run's report. Raises the run's refusal (a CorpusBotError such as IndexBusyError or
        RemovalsRefusedError), IndexProcessFailed, or IndexProcessDied."""
        ctx = _context()
        receive, send = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_child,
            args=(send, self.settings, self.allow_removals, self.embedder_factory),
            name="corpus-bot index",
            daemon=True,
        )
        try:
            if self._stopped.is_set():
                raise IndexProcessDied("the index run was stopped before it started")
            self._process.start()
        finally:
            send.close()  # the child holds the only write end now: its exit is our end of file
        outcome = None
        try:
            while True:
                try:
                    kind, value = receive.recv()
                except EOFError:
                    break
                if kind == "progress":
                    on_progress(value)
                elif kind == "log":
                    logging.getLogger(value.name).handle(value)
                else:
                    outcome = (kind, value)
        finally:
            receive.close()
            self._process.join()
        if outcome is None:
            raise IndexProcessDied(f"the index process {self._how_it_ended()} before it finished")
        kind, value = outcome
        if kind == "report":
            return value
        if kind == "refused":
            raise value
        raise IndexProcessFailed(f"an unexpected error stopped the run ({value}); the details are in the bot's log")

    def _how_it_ended(self) -> str:
        code = self._process.exitcode if self._process else None
        if self._stopped.is_set():
            return "was stopped (the bot is shutting down)"
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            if -code == signal.SIGKILL:
                return f"was killed ({name}: most often the system ran out of memory)"
            return f"was killed ({name})"
        return f"exited with status {code}"

    def stop(self) -> None:
        self._stopped.set()
        process = self._process
        if process is not None and process.pid is not None and process.exitcode is None:
            process.terminate()


class _Channel:
    """The child's end of the pipe: one message at a time (log records may come from any thread)."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.last_progress = 0.0
        self.stage = ""

    def send(self, kind: str, value) -> None:
        with self.lock:
            self.conn.send((kind, value))

    def progress(self, p: Progress) -> None:
        now = time.monotonic()
        if p.stage != self.stage or now - self.last_progress >= PROGRESS_EVERY:
            self.stage, self.last_progress = p.stage, now
            self.send("progress", p)  # pickled now: a copy of the state the job keeps changing


class _ToParent(logging.Handler):
    """Sends each record to the bot, which logs it with its own handlers (format, secret filter)."""

    def __init__(self, channel: _Channel) -> None:
        super().__init__(logging.INFO)
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.msg, record.args = record.getMessage(), None  # args may not pickle
            if record.exc_info:
                record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
                record.exc_info = None
            self.channel.send("log", record)
        except Exception:
            self.handleError(record)


def _first_to_go() -> None:
    """Ask the kernel to pick this process, not the bot, when memory runs out."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:  # not Linux, or not allowed: the bot is still apart from it
        pass


def _child(conn, settings: Settings, allow_removals: bool, embedder_factory: EmbedderFactory | None) -> None:
    os.environ.pop("DISCORD_TOKEN", None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the bot's to handle: it stops this run
    _first_to_go()
    channel = _Channel(conn)
    root = logging.getLogger()
    root.handlers[:] = [_ToParent(channel)]
    root.setLevel(logging.INFO)
    try:
        embedder = embedder_factory() if embedder_factory is not None else None
        report = index_store(settings).run_index(
            settings, allow_removals=allow_removals, embedder=embedder, on_progress=channel.progress
        )
    except CorpusBotError as exc:
        try:
            channel.send("refused", exc)
        except Exception:  # an error that does not pickle: its message is what matters
            channel.send("refused", IndexJobError(str(exc)))
    except BaseException as exc:  # anything else, a panic from native code included: say so, then exit
        log.exception("the index run failed")
        first_line = str(exc).splitlines()[0][:200] if str(exc).strip() else ""
        channel.send("failed", f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__)
    else:
        channel.send("report", report)
    finally:
        conn.close()
