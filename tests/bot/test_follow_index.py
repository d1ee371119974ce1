"""The bot follows index runs made outside it (`corpus-bot index` from cron): /ask serves what
they commit within seconds, a question in flight during a swap finishes on its snapshot, and the
snapshot it holds does not make the WAL grow without bound.

Before, /ask answered from the start-up snapshot until a restart, and that snapshot's read
transaction kept SQLite from starting the WAL over: it grew by every run."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import statistics
import time
from pathlib import Path

from embeddings import store
from tests.bot.helpers import GatedEmbedder, both_stores, committed_generation, started_bot
from tests.bot.processes import index_elsewhere
from tests.bot.test_reindex import ZEBRA, add_zebra
from tests.fake_discord import run
from tests.test_reliability_core import env_for, harness


async def answers(fake, question: str, needle: str) -> bool:
    rec = await fake.send_slash("ask", {"question": question}, member=fake.make_member())
    final = await rec.wait_final(timeout=10)
    return any(needle in e.get("description", "") for e in final.embeds)


async def until(condition, timeout: float) -> float:
    """Seconds until condition() holds (AssertionError after timeout)."""
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < timeout, f"not within {timeout} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def wal_bytes(settings) -> int:
    path = Path(f"{settings.index_path}-wal")
    return path.stat().st_size if path.exists() else 0


def store_env(settings) -> dict[str, str]:
    """The environment of `corpus-bot` for the index the settings name (file or INDEX_URL)."""
    return env_for(settings, INDEX_URL=settings.index_url)


@both_stores("fake_index")
def test_ask_answers_from_a_run_of_corpus_bot_index_within_ten_seconds(fake_index, fake_embedder, tmp_path):
    """The real command line (its entry point, with the fake embedder) in another process, while
    the bot serves with its default poll interval."""
    add_zebra(fake_index)

    async def main():
        async with started_bot(fake_index, fake_embedder) as (bot, fake):
            assert not await answers(fake, ZEBRA, "zebra")
            done = await asyncio.to_thread(harness, tmp_path, "index", env=store_env(fake_index))
            assert done.returncode == 0 and "1 changed" in done.stdout, done.stderr[-500:]
            seconds = await until(lambda: answers(fake, ZEBRA, "zebra"), 10)
            print(f"\n/ask answered from the external run {seconds:.2f} s after it ended")

    run(main())


def test_a_bot_started_without_an_index_serves_the_first_one_built_outside_it(fake_settings, fake_embedder, tmp_path):
    async def main():
        async with started_bot(fake_settings, fake_embedder) as (bot, fake):
            rec = await fake.send_slash("ask", {"question": "Kunduz"})
            assert "There is no index yet" in (await rec.wait_final()).content
            done = await asyncio.to_thread(harness, tmp_path, "index", env=env_for(fake_settings))
            assert done.returncode == 0, done.stderr[-500:]
            await until(lambda: answers(fake, "Who led the resistance in Kunduz?", "Kunduz"), 10)

    run(main())


def test_an_outside_run_the_bot_cannot_serve_leaves_the_previous_index_serving(
    fake_index, fake_embedder, tmp_path, caplog
):
    """`index --rebuild` with another EMBEDDING_MODEL than the bot's: the bot cannot answer from that
    index, so it keeps the one it has and says why in its log, once, while it keeps looking."""

    async def main():
        async with started_bot(fake_index, fake_embedder, poll_interval=0.1) as (bot, fake):
            before = bot.serving.index
            with caplog.at_level(logging.WARNING, logger="bot.serving"):
                env = env_for(fake_index, EMBEDDING_MODEL="another-model")
                done = await asyncio.to_thread(harness, tmp_path, "index", "--rebuild", env=env)
                assert done.returncode == 0, done.stderr[-500:]
                await asyncio.sleep(1.0)  # ten polls
            warnings = [r.getMessage() for r in caplog.records if r.name == "bot.serving"]
            assert len(warnings) == 1 and "still serving the previous one" in warnings[0]
            assert "was built with 'another-model' but EMBEDDING_MODEL is 'fake-hash-embedder'" in warnings[0]
            assert bot.serving.index is before and await answers(fake, "Kunduz", "Kunduz")

    run(main())


@both_stores("fake_index")
def test_a_question_in_flight_during_a_swap_finishes_on_its_snapshot(fake_index, fake_embedder):
    """A question held inside the search while an outside run commits and the bot swaps in the new
    snapshot: it is answered from the old state, whole (the passage texts it quotes are the ones
    its vectors came from), the old snapshot closes when it ends, and the next question sees the
    new state."""
    gated = GatedEmbedder(fake_embedder)
    gated.gate.set()  # questions pass until the test closes the gate

    async def main():
        async with started_bot(fake_index, gated, poll_interval=0.1) as (bot, fake):
            assert not await answers(fake, ZEBRA, "zebra")
            old = bot.serving._snapshot
            gated.gate.clear()
            gated.entered.clear()
            held = asyncio.create_task(answers(fake, ZEBRA, "zebra"))
            assert await asyncio.to_thread(gated.entered.wait, 10)  # in the search, on the old snapshot
            add_zebra(fake_index)
            report = await asyncio.to_thread(index_elsewhere, fake_index)
            assert report.changed
            new = committed_generation(fake_index)
            await until(lambda: served(bot, new), 10)  # swapped while the question is held
            assert not old.closed.is_set() and old.users == 1
            gated.gate.set()
            assert not await held  # answered from the state it started on
            await asyncio.wait_for(old.closed.wait(), 5)  # and that snapshot let go once it was done
            assert await answers(fake, ZEBRA, "zebra")

    run(main())


async def served(bot, generation: str) -> bool:
    return bot.serving.index.meta.get("generation") == generation


def add_article(settings, n: int) -> str:
    word = f"quokka{n}x"
    (settings.corpus_dir / f"extra_{n:02d}.txt").write_text(
        f"Bulletin {n}\n\nThe {word} census counted animals on the island again this week, rangers said.\n"
    )
    return word


def test_the_wal_stays_bounded_over_twenty_external_runs(fake_index, fake_embedder):
    """20 runs in another process, each adding an article. After each, the bot serves it and the
    WAL is emptied; what a run writes never piles up behind the bot's snapshot."""
    runs = 20

    async def served(bot, generation) -> bool:
        return bot.serving.index.meta.get("generation") == generation

    async def main():
        ctx = multiprocessing.get_context("forkserver")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as elsewhere:
            async with started_bot(fake_index, fake_embedder, poll_interval=0.2) as (bot, fake):
                loop = asyncio.get_running_loop()
                after_run, after_follow, words = [], [], []
                for n in range(runs):
                    words.append(add_article(fake_index, n))
                    report = await loop.run_in_executor(elsewhere, index_elsewhere, fake_index)
                    assert report.added == [f"extra_{n:02d}.txt"]
                    after_run.append(wal_bytes(fake_index))
                    with store.reading(fake_index.index_path) as conn:
                        generation = store.read_meta(conn)["generation"]
                    await until(lambda generation=generation: served(bot, generation), 10)
                    await asyncio.sleep(0.3)  # its second load and the checkpoint
                    after_follow.append(wal_bytes(fake_index))
                assert await answers(fake, f"the {words[-1]} census", words[-1])
                assert await answers(fake, f"the {words[0]} census", words[0])
        print(f"\nWAL after each of {runs} external runs (bytes): {after_run}\nafter the bot followed: {after_follow}")
        # Each run's WAL is that run's frames, never an accumulation (which would end near the sum)...
        one_run = statistics.median(after_run)
        assert max(after_run) <= 4 * one_run and after_run[-1] <= 2 * one_run, after_run
        # ...because the bot empties the WAL once it serves the run.
        assert max(after_follow) <= min(after_run), after_follow

    run(main(), timeout=120)


def test_commits_without_new_content_do_not_grow_the_wal_past_its_limit(fake_index, fake_embedder, monkeypatch):
    """Runs with nothing to do (cron, every few minutes) commit a few pages each and no new
    generation: past WAL_LIMIT_BYTES the bot loads its snapshot again so the WAL can restart."""
    from bot import serving as serving_module

    limit = 64 * 1024
    monkeypatch.setattr(serving_module, "WAL_LIMIT_BYTES", limit)

    async def main():
        ctx = multiprocessing.get_context("forkserver")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as elsewhere:
            async with started_bot(fake_index, fake_embedder, poll_interval=0.1) as (bot, fake):
                loop = asyncio.get_running_loop()
                sizes = []
                for _ in range(40):
                    report = await loop.run_in_executor(elsewhere, index_elsewhere, fake_index)
                    assert not (report.added or report.changed or report.removed)
                    sizes.append(wal_bytes(fake_index))
                    await asyncio.sleep(0.25)
                assert await answers(fake, "Kunduz", "Kunduz")
        print(f"\nWAL after each of 40 runs with nothing to do (bytes): {sizes}")
        steps = list(zip(sizes, sizes[1:]))
        assert any(after < before for before, after in steps), sizes  # released, and started over
        assert max(sizes) <= limit + 2 * max(after - before for before, after in steps), sizes

    run(main(), timeout=120)


def test_the_bot_upgrades_an_index_written_by_an_older_corpus_bot_and_serves_it(fake_settings, fake_embedder):
    """Readers never migrate, but the bot owns its index: at start it brings an older schema up to
    date, then answers from it (without it the bot would start with no index at all)."""
    from tests.test_index_file import SCHEMA_4_TEXTS, schema_4_index

    schema_4_index(fake_settings.index_path, fake_embedder)

    async def main():
        async with started_bot(fake_settings, fake_embedder) as (bot, fake):
            assert await answers(fake, "When does the new bridge open?", "bridge")

    run(main())
    with store.reading(fake_settings.index_path) as conn:  # upgraded: readable by every command now
        assert store.passage_count(conn) == len(SCHEMA_4_TEXTS)
