"""What the bot serves from: the current index snapshot, the embedder, a bounded search pool, and
the one re-index job that may be running.

Everything CPU-bound or blocking (embedding a question, loading a snapshot, the index job) runs
off the event loop, so the gateway heartbeat and other interactions are never held up:

* searches go to a thread pool of `SEARCH_WORKERS` threads; more requests queue there, but at
  most `SEARCH_QUEUE_LIMIT` at once (waiting + running): beyond that a question is refused at
  once with `Busy` ("try again in a few seconds") instead of waiting without bound;
* the index job gets a thread of its own (and its own embedder), so questions never wait behind
  index batches;
* a finished job's new snapshot replaces the old one with one reference assignment: a search that
  already holds the old snapshot finishes on it (its read transaction keeps it consistent), the
  next one uses the new snapshot, and the old one is closed when the last reference goes.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from embeddings import store
from embeddings.answer import Answer, Result
from embeddings.config import Settings
from embeddings.embedder import Embedder, Reranker, load_reranker
from embeddings.query_model import load_query_embedder
from embeddings.feedback import record_feedback
from embeddings.errors import CorpusBotError, IndexMissingError
from embeddings.index import IndexReport, Progress, run_index
from embeddings.search import DEFAULT_MODE, Filters, SearchIndex

log = logging.getLogger(__name__)


class Unavailable(CorpusBotError):
    """The bot cannot answer yet (no index); the message is shown to the user."""


#: Questions (searches and context look-ups) waiting or running at once; one more is refused with
#: Busy. 256 at the measured ~30 ms per question (real model, 2 workers, the shipped corpus) is
#: about 8 s of queued work: a burst of 200 questions at once is still answered (the load test),
#: a bigger one gets a polite refusal instead of a "thinking…" that lasts minutes. Each waiting
#: question holds only a few KB. Tests lower it per bot (`bot.serving.queue_limit`).
SEARCH_QUEUE_LIMIT = 256

BUSY = "I'm busy answering other questions right now; please try again in a few seconds."


#: Set in a task that holds a Serving.slot(), so nested searches do not take a second place.
_holding_slot: ContextVar[bool] = ContextVar("corpus_bot_holding_search_slot", default=False)


class Busy(CorpusBotError):
    """Too many questions waiting or running (SEARCH_QUEUE_LIMIT); the message is shown to the user."""

    def __init__(self) -> None:
        super().__init__(BUSY)


class VoteNotRecorded(CorpusBotError):
    """A vote could not be stored (no index file, read-only file, locked too long); shown to the user."""


class AlreadyRunning(RuntimeError):
    def __init__(self, job: "ReindexJob") -> None:
        super().__init__("a re-index is already running")
        self.job = job


@dataclass
class ReindexJob:
    """One /reindex run. `progress` is replaced (never mutated) by the worker thread, so the event
    loop can read it at any time; `done` is set when `report` or `error` is final."""

    started_by: str
    started_at: float = field(default_factory=time.monotonic)
    progress: Progress | None = None
    report: IndexReport | None = None
    error: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None

    def describe(self) -> str:
        elapsed = time.monotonic() - self.started_at
        what = self.progress.describe() if self.progress else "starting"
        return f"{what} (started by {self.started_by} {elapsed:.0f} s ago)"


class Serving:
    def __init__(self, settings: Settings, *, embedder: Embedder | None = None, index_embedder: Embedder | None = None):
        self.settings = settings
        self.embedder = embedder
        # None: each run loads its own model (only when there is something to embed) and drops it after.
        self.index_embedder = index_embedder
        self.index: SearchIndex | None = None
        self.reranker: Reranker | None = None
        self.unavailable_reason = "the bot is still starting; try again in a few seconds"
        self.job: ReindexJob | None = None
        #: questions waiting for or running in the search pool, and the bound on them.
        self.queued = 0
        self.queue_limit = SEARCH_QUEUE_LIMIT
        self._pool = ThreadPoolExecutor(max_workers=settings.search_workers, thread_name_prefix="corpus-search")
        self._job_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corpus-reindex")

    # ------------------------------------------------------------------------- start / stop

    async def start(self) -> None:
        """Load the model and the index once (from setup_hook). A missing index is not fatal: the
        bot starts and says how to build one; other problems (a model mismatch, a newer schema,
        a model that cannot load) raise and stop the start with their message."""
        async def load_model() -> None:
            if self.embedder is None:
                started = time.monotonic()
                # The ONNX export beside the index when there is one (no torch, ~0.5 s), else the full model.
                self.embedder = await self._run(load_query_embedder, self.settings.index_path, self.settings.embedding_model)
                log.info("loaded embedding model %s (%s) in %.1f s", self.settings.embedding_model,
                         type(self.embedder).__name__, time.monotonic() - started)
            if self.settings.rerank_model:
                self.reranker = await self._run(load_reranker, self.settings.rerank_model)

        async def load_index() -> None:
            started = time.monotonic()
            try:
                self.index = await self._run(self._load)
            except IndexMissingError as exc:
                self.unavailable_reason = f"there is no index yet ({exc}); an admin can build it with /reindex"
                log.warning("starting without an index: %s", exc)
            else:
                log.info("serving %d articles, %d passages (loaded in %.1f s)", len(self.index.articles),
                         self.index.passage_count, time.monotonic() - started)

        # Side by side: at 1M passages the index takes 1-1.5 s to load (page cache warm), the model 0.3-0.7 s.
        await asyncio.gather(load_model(), load_index())

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._job_pool.shutdown(wait=False, cancel_futures=True)

    def _load(self) -> SearchIndex:
        s = self.settings
        return SearchIndex.load(s.index_path, model_name=s.embedding_model, weak_score=s.weak_score)

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    # ------------------------------------------------------------------------- queries

    def current(self) -> SearchIndex:
        if self.index is None:
            raise Unavailable(self.unavailable_reason)
        return self.index

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the queue_limit places for questions (waiting for or running in the search
        pool); Busy at once when none is free. Commands take it before they defer, so a refusal
        is a private reply and nobody waits behind an unbounded queue; search() and context()
        inside it do not count a second time (one place per task)."""
        if _holding_slot.get():
            yield
            return
        if self.queued >= self.queue_limit:
            raise Busy()
        self.queued += 1
        token = _holding_slot.set(True)
        try:
            yield
        finally:
            _holding_slot.reset(token)
            self.queued -= 1

    async def _query(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self.slot():
            return await self._run(fn, *args, **kwargs)

    async def search(
        self, question: str, *, k: int, offset: int = 0, filters: Filters = Filters(), mode: str = DEFAULT_MODE
    ) -> Answer:
        index = self.current()  # this snapshot answers the whole request, even if a swap happens meanwhile
        return await self._query(
            index.search, question, self.embedder, k=k, offset=offset, filters=filters, mode=mode, reranker=self.reranker
        )

    async def context(self, passage_id: int, radius: int = 1) -> list[Result]:
        return await self._query(self.current().context, passage_id, radius)

    async def stats(self) -> tuple[dict, dict | None]:
        def read() -> tuple[dict, dict | None]:
            with store.reading(self.settings.index_path) as conn:
                return store.index_stats(conn, self.settings.index_path), store.last_run(conn)

        try:
            return await self._run(read)
        except IndexMissingError:
            raise Unavailable(self.unavailable_reason) from None

    async def record_vote(self, answer: Answer, *, user_id: int | str, vote: int, mode: str = DEFAULT_MODE) -> None:
        """Store one 👍 (1) / 👎 (-1) on an answer page as shown, in the index file's feedback table
        (aiosqlite: the event loop never waits on the disk). Every click is a row; the export keeps
        the latest judgment per passage. VoteNotRecorded when the file cannot take the write."""
        path = self.settings.index_path
        if not path.is_file():  # connecting would create an empty database there
            raise VoteNotRecorded("your vote could not be recorded: there is no index file right now")
        try:
            await record_feedback(path, answer, user_id=user_id, vote=vote, mode=mode)
        except (sqlite3.Error, OSError) as exc:
            log.warning("could not record a vote in %s: %s", path, exc)
            raise VoteNotRecorded(
                "your vote could not be recorded: the index file cannot be written right now; please try again later"
            ) from None

    def source_names(self) -> list[str]:
        return self.index.source_names() if self.index is not None else []

    # ------------------------------------------------------------------------- re-index

    def start_reindex(self, started_by: str) -> ReindexJob:
        """Start the incremental index job in the background; AlreadyRunning if one is running.
        (Another process running the CLI's index job is caught by the core's lock: the job fails
        with IndexBusyError's message.)"""
        if self.job is not None and not self.job.done.is_set():
            raise AlreadyRunning(self.job)
        job = ReindexJob(started_by=started_by)
        job.task = asyncio.create_task(self._reindex(job), name="corpus-reindex")
        self.job = job
        return job

    async def _reindex(self, job: ReindexJob) -> None:
        loop = asyncio.get_running_loop()

        def on_progress(p: Progress) -> None:
            job.progress = replace(p)  # a copy: the job thread keeps mutating its own

        def work() -> tuple[IndexReport, SearchIndex]:
            report = run_index(self.settings, embedder=self.index_embedder, on_progress=on_progress)
            return report, self._load()

        try:
            report, index = await loop.run_in_executor(self._job_pool, work)
        except CorpusBotError as exc:
            job.error = str(exc)
            log.warning("re-index refused: %s", exc)
        except Exception:
            log.exception("re-index failed")
            job.error = "an unexpected error stopped the run (details are in the bot's log)"
        else:
            self.index = index  # the swap: one reference assignment on the event loop
            job.report = report
            log.info("re-index done: %s", report.summary())
        finally:
            job.done.set()

    async def wait_idle(self) -> None:
        """Wait for a running job to end (used on shutdown and by tests)."""
        if self.job is not None and self.job.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self.job.task)
