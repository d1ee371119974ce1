"""What the bot serves from: the current index snapshot, the embedder, a bounded search pool, the
one re-index job that may be running, and the watch that follows the index (the SQLite file, or
the database of INDEX_URL: embeddings/stores.py holds what differs between them).

Everything CPU-bound or blocking (embedding a question, loading a snapshot, the index job) runs
off the event loop, so the gateway heartbeat and other interactions are never held up:

* searches go to a thread pool of `SEARCH_WORKERS` threads; more requests queue there, but at
  most `SEARCH_QUEUE_LIMIT` at once (waiting + running): beyond that a question is refused at
  once with `Busy` ("try again in a few seconds") instead of waiting without bound;
* the index job runs in a child process (bot/index_process.py): a corpus file that makes it take
  gigabytes, or a crash, ends that process and not the bot, and its memory goes with it;
* every `POLL_SECONDS` an upkeep thread looks at the index (bot/index_watch.py); a new
  committed generation, from /reindex, from `corpus-bot index` run outside the bot (cron), or
  from another bot process serving the same database, is loaded there and replaces the snapshot
  with one reference assignment: a search that already holds the old snapshot finishes on it
  (its read transaction keeps it consistent), the next one uses the new snapshot, and the old
  one is closed as soon as its last search ends, so that no read transaction holds the
  write-ahead log (SQLite) or back VACUUM (PostgreSQL) longer than its questions need.

Work in the threads may raise what is not an `Exception` (the PanicException of a Rust library);
it comes back to the command as an ordinary error (WorkerCrash), so the command is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from embeddings.answer import Answer, Result
from embeddings.config import Settings
from embeddings.embedder import Embedder, Reranker, load_reranker
from embeddings.errors import CorpusBotError, IndexMissingError, RemovalsRefusedError
from embeddings.index import IndexReport, Progress
from embeddings.search import DEFAULT_MODE, Filters, SearchIndex
from embeddings.stores import index_store

from .index_process import EmbedderFactory, IndexProcess, IndexProcessDied, IndexProcessFailed
from .index_watch import Seen, index_watch

log = logging.getLogger(__name__)

#: Seconds between two looks at the index for a new generation (a PRAGMA and a stat on the file,
#: one one-row query on PostgreSQL).
POLL_SECONDS = 2.0
#: Commits that bring no new content (votes, index runs with nothing to do) still add to the WAL
#: while a snapshot is held; past this size the snapshot is loaded again so the WAL can restart.
WAL_LIMIT_BYTES = 4 * 1024 * 1024
#: Seconds a swap waits for the searches still running on the replaced snapshot.
RETIRE_WAIT = 30.0
#: Seconds before a generation that could not be loaded is tried again.
RETRY_SECONDS = 60.0
#: What a worker thread may raise that must stop things rather than fail one request.
MUST_PROPAGATE = (KeyboardInterrupt, SystemExit, asyncio.CancelledError, GeneratorExit)


class Unavailable(CorpusBotError):
    """The bot cannot answer yet (no index); the message is shown to the user."""


#: Questions (searches and context look-ups) waiting or running at once; one more is refused with
#: Busy. 256 questions are seconds of queued work on a small host (real model, 2 workers): a
#: burst of 200 questions at once is still answered (the load test),
#: a bigger one gets a polite refusal instead of a "thinking…" that lasts minutes. Each waiting
#: question holds only a few KB. Tests lower it per bot (`bot.serving.queue_limit`).
SEARCH_QUEUE_LIMIT = 256

BUSY = "I'm busy answering other questions right now; please try again in a few seconds."
UNREACHABLE = "the index cannot be read right now (its database is not answering); please try again in a few seconds"


#: Set in a task that holds a Serving.slot(), so nested searches do not take a second place.
_holding_slot: ContextVar[bool] = ContextVar("corpus_bot_holding_search_slot", default=False)


class Busy(CorpusBotError):
    """Too many questions waiting or running (SEARCH_QUEUE_LIMIT); the message is shown to the user."""

    def __init__(self) -> None:
        super().__init__(BUSY)


class AlreadyRunning(RuntimeError):
    def __init__(self, job: ReindexJob) -> None:
        super().__init__("a re-index is already running")
        self.job = job


class WorkerCrash(RuntimeError):
    """Work in a worker thread raised a BaseException that is not an Exception, such as pyo3's
    PanicException from a Rust library: from here on an ordinary error of that one request, so the
    command's error handler answers it (discord.py handles only Exception)."""


async def contained(work: Awaitable[Any]) -> Any:
    """await work; a BaseException from it other than MUST_PROPAGATE comes back as WorkerCrash."""
    try:
        return await work
    except Exception:
        raise
    except MUST_PROPAGATE:
        raise
    except BaseException as exc:
        raise WorkerCrash(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}") from exc


@dataclass
class ReindexJob:
    """One /reindex run. `progress` is replaced (never mutated) by the thread that follows the
    index process, so the event loop can read it at any time; `done` is set when `report` or
    `error` is final. `committed`: the run's changes are served (also when it then died)."""

    started_by: str
    allow_removals: bool = False
    started_at: float = field(default_factory=time.monotonic)
    progress: Progress | None = None
    report: IndexReport | None = None
    error: str | None = None
    committed: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    process: IndexProcess | None = None

    def describe(self) -> str:
        elapsed = time.monotonic() - self.started_at
        what = self.progress.describe() if self.progress else "starting"
        return f"{what} (started by {self.started_by} {elapsed:.0f} s ago)"


class Snapshot:
    """A loaded SearchIndex and the searches running on it. Once replaced it is closed as soon as
    the last of them ends, and its read transaction with it (loop thread only)."""

    def __init__(self, index: SearchIndex, derived: tuple[str, str] | None = None) -> None:
        self.index = index
        self.derived = derived  # the store's derived() when it was loaded
        self.users = 0
        self.retired = False
        self.broken = False  # its connection to the database is gone: the next poll loads anew
        self.closed = asyncio.Event()

    @property
    def generation(self) -> str | None:
        return self.index.meta.get("generation")

    def release(self) -> None:
        self.users -= 1
        self._close_when_idle()

    def retire(self) -> None:
        self.retired = True
        self._close_when_idle()

    def _close_when_idle(self) -> None:
        if self.retired and self.users == 0 and not self.closed.is_set():
            self.closed.set()
            self.index.close()

    async def wait_closed(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
        except TimeoutError:
            log.warning("a replaced index snapshot is still in use after %.0f s (%d searches)", timeout, self.users)


class Serving:
    def __init__(
        self,
        settings: Settings,
        *,
        embedder: Embedder | None = None,
        index_embedder_factory: EmbedderFactory | None = None,
    ):
        self.settings = settings
        self.index_store = index_store(settings)  # the SQLite file or PostgreSQL, chosen once
        self.embedder = embedder
        # An embedder given by the caller is theirs to keep right; one the bot loads is replaced when
        # a run elsewhere rebuilds the index with other model files (its probe vector changes).
        self._loads_embedder = embedder is None
        # None: each run's process loads EMBEDDING_MODEL (only when there is something to embed).
        self.index_embedder_factory = index_embedder_factory
        self.reranker: Reranker | None = None
        self.unavailable_reason = "the bot is still starting; try again in a few seconds"
        self.job: ReindexJob | None = None
        #: questions waiting for or running in the search pool, and the bound on them.
        self.queued = 0
        self.queue_limit = SEARCH_QUEUE_LIMIT
        #: seconds between two looks at the index file (tests lower it).
        self.poll_interval = POLL_SECONDS
        self._snapshot: Snapshot | None = None
        self._pool = ThreadPoolExecutor(max_workers=settings.search_workers, thread_name_prefix="corpus-search")
        self._job_pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="corpus-reindex"
        )  # follows the index process
        self._upkeep = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corpus-index-watch")  # polls, loads
        self._watch = index_watch(settings)
        self._refreshing = asyncio.Lock()
        self._follower: asyncio.Task | None = None
        self._failed: tuple[str | None, float] | None = None  # a generation that did not load, and when
        self._wal_released_at = -1  # Seen.commits when the WAL was last released for its size
        self._last_warning = ""
        self._closed = False

    # ------------------------------------------------------------------------- start / stop

    async def start(self) -> None:
        """Load the model and the index once (from setup_hook), then follow the index file. A
        missing index is not fatal: the bot starts, says how to build one, and serves it once
        /reindex or `corpus-bot index` has built it; other problems (a model mismatch, a newer
        schema, a model that cannot load) raise and stop the start with their message."""

        async def load_model() -> None:
            if self.embedder is None:
                started = time.monotonic()
                self.embedder = await self._run(self.index_store.query_embedder, self.settings)
                log.info(
                    "loaded embedding model %s (%s) in %.1f s",
                    self.settings.embedding_model,
                    type(self.embedder).__name__,
                    time.monotonic() - started,
                )
            if self.settings.rerank_model:
                self.reranker = await self._run(load_reranker, self.settings.rerank_model)

        async def load_index() -> None:
            started = time.monotonic()
            try:
                # The bot owns its index: an older schema is upgraded here (readers never migrate).
                await self._run(self.index_store.upgrade, self.settings)
                await self._refresh()
            except IndexMissingError as exc:
                self.unavailable_reason = f"there is no index yet ({exc}); an admin can build it with /reindex"
                log.warning("starting without an index: %s", exc)
            else:
                log.info(
                    "serving %d articles, %d passages (loaded in %.1f s)",
                    len(self.index.articles),
                    self.index.passage_count,
                    time.monotonic() - started,
                )

        # Side by side: on a large index both take a noticeable time to load.
        await asyncio.gather(load_model(), load_index())
        self._follower = asyncio.create_task(self._follow(), name="corpus-follow-index")

    def close(self) -> None:
        self._closed = True
        if self._follower is not None:
            self._follower.cancel()
        if self.job is not None and self.job.process is not None and not self.job.done.is_set():
            self.job.process.stop()  # its single commit keeps the index whole; the next run redoes the work
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._job_pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(RuntimeError):
            self._upkeep.submit(self._watch.close)
        self._upkeep.shutdown(wait=False, cancel_futures=True)
        if self._snapshot is not None:
            self._snapshot.retire()

    def _load(self) -> SearchIndex:
        return self.index_store.load(self.settings)

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await contained(loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs)))

    async def _upkept(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) in the upkeep thread, the only one that uses the watch."""
        loop = asyncio.get_running_loop()
        return await contained(loop.run_in_executor(self._upkeep, functools.partial(fn, *args)))

    # ------------------------------------------------------------------------- queries

    @property
    def index(self) -> SearchIndex | None:
        return self._snapshot.index if self._snapshot is not None else None

    @index.setter
    def index(self, index: SearchIndex) -> None:
        self._swap(Snapshot(index))

    def current(self) -> SearchIndex:
        return self._current().index

    def _current(self) -> Snapshot:
        if self._snapshot is None:
            raise Unavailable(self.unavailable_reason)
        return self._snapshot

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

    async def _query(self, work: Callable[[SearchIndex], Any]) -> Any:
        """work(snapshot) in the search pool. This snapshot answers the whole request, even if a
        swap happens meanwhile; it stays open until the work's thread is done with it."""
        snapshot = self._current()
        with self.slot():
            loop = asyncio.get_running_loop()
            snapshot.users += 1
            try:
                future = self._pool.submit(work, snapshot.index)
            except BaseException:
                snapshot.release()
                raise

            def done(_) -> None:  # in the worker thread, when it is done (or the work was cancelled)
                with contextlib.suppress(RuntimeError):  # the loop is closed: the bot is gone
                    loop.call_soon_threadsafe(snapshot.release)

            future.add_done_callback(done)
            try:
                return await contained(asyncio.wrap_future(future))
            except self.index_store.read_errors as exc:
                if not snapshot.broken:
                    snapshot.broken = True
                    log.warning("the index snapshot cannot be read any more (%s); loading it again", exc)
                raise Unavailable(UNREACHABLE) from None

    async def search(
        self, question: str, *, k: int, offset: int = 0, filters: Filters = Filters(), mode: str = DEFAULT_MODE
    ) -> Answer:
        embedder, reranker = self.embedder, self.reranker
        return await self._query(
            lambda index: index.search(
                question, embedder, k=k, offset=offset, filters=filters, mode=mode, reranker=reranker
            )
        )

    async def context(self, passage_id: int, radius: int = 1) -> list[Result]:
        return await self._query(lambda index: index.context(passage_id, radius))

    async def stats(self) -> dict:
        try:
            return await self._run(self.index_store.stats, self.settings)
        except IndexMissingError:
            raise Unavailable(self.unavailable_reason) from None
        except self.index_store.read_errors as exc:
            log.warning("cannot read the index's statistics: %s", exc)
            raise Unavailable(UNREACHABLE) from None

    async def record_vote(self, answer: Answer, *, user_id: int | str, vote: int, mode: str = DEFAULT_MODE) -> None:
        """Store one 👍 (1) / 👎 (-1) on an answer page as shown, in the index's feedback table
        (off the event loop). Every click is a row; the export keeps the latest judgment per
        passage. VoteNotRecorded when the index cannot take the write."""
        await self.index_store.record_vote(self.settings, answer, user_id=user_id, vote=vote, mode=mode)

    def source_names(self) -> list[str]:
        return self.index.source_names() if self.index is not None else []

    # ------------------------------------------------------------------------- following the index

    def _watching(self):
        """(upkeep thread) The watch on the configured index."""
        if self._watch.location != self.index_store.location(self.settings):
            self._watch.close()
            self._watch = index_watch(self.settings)
        return self._watch

    def _swap(self, snapshot: Snapshot) -> Snapshot | None:
        """Serve snapshot from the next request on (one reference assignment, on the loop)."""
        old, self._snapshot = self._snapshot, snapshot
        if old is not None:
            old.retire()
        return old

    def _load_fresh(self) -> tuple[SearchIndex, tuple[str, str] | None, bool, Embedder | None]:
        """(upkeep thread) Load the committed state. True when the snapshot holds nothing the store
        needs back (an SQLite file: it was loaded right after the WAL was all copied back, so it
        reads the database file only; bot/index_watch.py). The last item is the embedder for
        questions when the new state needs another one (its model's files changed), else None."""
        index, settled = self._watching().load_settled(self._load)
        try:
            return index, self.index_store.derived(index, self.settings), settled, self._embedder_for(index)
        except BaseException:
            index.close()
            raise

    def _embedder_for(self, index: SearchIndex) -> Embedder | None:
        """(upkeep thread) A new embedder when the index's model identity (its probe vector and the
        hash of the model's files) is not the one the current embedder was verified against: an
        index rebuilt elsewhere with other model files must never be asked with the old model.
        ModelMismatchError when no model that gives its vectors can be loaded."""
        serving = self.index
        identity = ("probe_vector", "model_hash")
        if (
            not self._loads_embedder
            or serving is None
            or all(index.meta.get(k) == serving.meta.get(k) for k in identity)
        ):
            return None
        return self.index_store.query_embedder(self.settings, index.meta)

    async def _refresh(self) -> None:
        """Load the committed state of the index and serve it. When that load had to read the WAL
        (the replaced snapshot still held it), load once more after the replaced snapshot closed,
        so the snapshot kept does not hold the WAL, and empty the WAL."""
        async with self._refreshing:
            for _ in range(2):
                index, derived, reads_file_only, embedder = await self._upkept(self._load_fresh)
                if embedder is not None:
                    self.embedder = embedder
                    log.info("the index was rebuilt with other model files: questions use the new model")
                old = self._swap(Snapshot(index, derived))
                if old is not None:
                    await old.wait_closed(RETIRE_WAIT)
                if reads_file_only:
                    await self._upkept(self._watch.truncate)
                    break

    def _look(self) -> tuple[Seen | None, tuple[str, str] | None]:
        """(upkeep thread) The index now, and where the current snapshot's derived copies would
        come from now."""
        seen = self._watching().poll()
        snapshot = self._snapshot
        if seen is None or snapshot is None or snapshot.derived is None or seen.generation != snapshot.generation:
            return seen, None
        return seen, self.index_store.derived(snapshot.index, self.settings)

    async def refresh_if_changed(self, *, retry_failed: bool = True) -> bool:
        """Serve the committed state of the index if it differs from the snapshot's: another
        generation, a snapshot whose database connection broke, derived copies that became
        current, or a WAL grown past WAL_LIMIT_BYTES by commits since it was last released. True
        when a new snapshot is served."""
        seen, derived = await self._upkept(self._look)
        if seen is None:
            return False  # no index (yet, or any more): keep serving what there is
        snapshot = self._snapshot
        if snapshot is None or snapshot.broken or seen.generation != snapshot.generation:
            if (
                not retry_failed
                and self._failed
                and self._failed[0] == seen.generation
                and time.monotonic() - self._failed[1] < RETRY_SECONDS
            ):
                return False
            try:
                await self._refresh()
            except self.index_store.read_errors:
                raise  # the server is away: try again at the next poll
            except Exception:
                self._failed = (seen.generation, time.monotonic())
                raise
            self._failed = None
            return True
        if derived is not None and derived != snapshot.derived:
            await self._refresh()
            return True
        if seen.wal_bytes > WAL_LIMIT_BYTES and seen.commits != self._wal_released_at:
            self._wal_released_at = seen.commits
            await self._refresh()
            return True
        return False

    async def _follow(self) -> None:
        """Every poll_interval, serve what an index run made outside the bot committed."""
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                if await self.refresh_if_changed(retry_failed=False):
                    index = self.index
                    log.info(
                        "serving index generation %s: %d articles, %d passages",
                        index.meta.get("generation"),
                        len(index.articles),
                        index.passage_count,
                    )
                self._last_warning = ""
            except Exception as exc:  # never stop following: a bad state of the index may be fixed
                where = self.index_store.shown(self.settings)
                text = f"cannot serve the index at {where} as it is now ({exc}); still serving the previous one"
                if text != self._last_warning:
                    self._last_warning = text
                    log.warning("%s", text)

    # ------------------------------------------------------------------------- re-index

    def start_reindex(self, started_by: str, *, allow_removals: bool = False) -> ReindexJob:
        """Start the incremental index job in a child process; AlreadyRunning if one is running.
        (Another process running the CLI's index job is caught by the core's lock: the job fails
        with IndexBusyError's message.)"""
        if self.job is not None and not self.job.done.is_set():
            raise AlreadyRunning(self.job)
        job = ReindexJob(started_by=started_by, allow_removals=allow_removals)
        job.process = IndexProcess(
            self.settings, allow_removals=allow_removals, embedder_factory=self.index_embedder_factory
        )
        job.task = asyncio.create_task(self._reindex(job), name="corpus-reindex")
        self.job = job
        return job

    async def _reindex(self, job: ReindexJob) -> None:
        loop = asyncio.get_running_loop()
        before = self._snapshot.generation if self._snapshot is not None else None

        def on_progress(p: Progress) -> None:  # the job thread; p is the child's copy, never changed again
            job.progress = p

        try:
            job.report = await contained(loop.run_in_executor(self._job_pool, job.process.run, on_progress))
        except RemovalsRefusedError as exc:
            job.error = str(
                RemovalsRefusedError(
                    exc.removing, exc.indexed, exc.corpus, exc.found, confirm="run /reindex allow_removals:True"
                )
            )
            log.warning("re-index refused: %s", exc)
        except (IndexProcessDied, IndexProcessFailed) as exc:
            job.error = str(exc)
            log.error("re-index failed: %s", exc)
        except CorpusBotError as exc:
            job.error = str(exc)
            log.warning("re-index refused: %s", exc)
        except Exception:
            log.exception("re-index failed")
            job.error = "an unexpected error stopped the run (details are in the bot's log)"
        try:
            # Serve what is committed now: the run's new index, and also what a run that died
            # after its commit wrote.
            if not self._closed:
                await self.refresh_if_changed()
            if job.report is not None:
                log.info("re-index done: %s", job.report.summary())
        except Exception as exc:
            if isinstance(exc, CorpusBotError):
                log.warning("the index cannot be served after the re-index: %s", exc)
            else:
                log.exception("the index could not be loaded after the re-index")
            if job.report is not None:  # a refusal or a death says more than this
                job.report = None
                job.error = (
                    str(exc)
                    if isinstance(exc, CorpusBotError)
                    else "the new index could not be loaded (details are in the bot's log)"
                )
        finally:
            job.committed = self._snapshot is not None and self._snapshot.generation != before
            if job.error and job.committed:  # it died after its commit
                job.error += "; it had committed its changes, which /ask now answers from"
            job.done.set()

    async def wait_idle(self) -> None:
        """Wait for a running job to end (used on shutdown and by tests)."""
        if self.job is not None and self.job.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self.job.task)
