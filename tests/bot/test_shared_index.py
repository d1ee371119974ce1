"""Several bots serving one index in PostgreSQL (the same INDEX_URL): every one follows what any
index run commits (`corpus-bot index` from cron, or /reindex in one of them) within seconds, and a
server connection that breaks costs a warning and a retry, never the bot.

Most tests run the two bots in the test process, each a real bot with its own Serving (its own
snapshot, connections, upkeep thread and poll) on one shard of the fake Discord: they share nothing
but the database. One runs each bot in a process of its own, as two `corpus-bot run` would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import statistics
import time
from dataclasses import replace

import pytest

from bot.app import create_bot
from bot.index_watch import PostgresWatch
from embeddings.postgres import snapshot
from tests.bot.helpers import committed_generation, in_store
from tests.bot.processes import index_elsewhere, serve_one_shard
from tests.bot.test_follow_index import store_env, until
from tests.bot.test_reindex import ZEBRA, add_zebra, reindex_outcome
from tests.bot.test_sharding import guild_on_each_shard, no_identify_wait, with_shards
from tests.fake_discord import MANAGE_GUILD, FakeDiscord, run, running_bot
from tests.helpers import FakeEmbedder
from tests.test_reliability_core import harness

BOUND_S = 10.0


@pytest.fixture
def postgres_index(request, fake_settings, fake_embedder):
    return in_store(request, fake_settings, store="postgres")


@contextlib.asynccontextmanager
async def two_bots(settings, embedder, *, poll_interval=None):
    """Two bots on the same index, one per shard, and {shard: its guild id}. The tests ask often:
    no per-user cooldown."""
    settings = replace(settings, ask_cooldown_seconds=0)
    async with FakeDiscord() as fake:
        guilds = guild_on_each_shard(fake)
        bots = []
        for shard in (0, 1):
            bot = create_bot(
                with_shards(settings, {"SHARD_COUNT": "2", "SHARD_IDS": str(shard)}),
                embedder=embedder,
                index_embedder_factory=FakeEmbedder,  # what /reindex's process embeds with
                sync_global=True,  # guild sync reaches one guild only
                guild_ready_timeout=0.05,
            )
            bot.before_identify_hook = no_identify_wait
            bot.progress_interval = 0.1
            if poll_interval is not None:
                bot.serving.poll_interval = poll_interval
            bots.append(bot)
        async with running_bot(bots[0], fake), running_bot(bots[1], fake):
            yield bots, fake, guilds


async def answers_in(fake, guild_id: int, question: str, needle: str) -> bool:
    rec = await fake.send_slash("ask", {"question": question}, guild_id=guild_id)
    final = await rec.wait_final(timeout=10)
    return any(needle in e.get("description", "") for e in final.embeds)


async def both_answer(fake, guilds, question: str, needle: str) -> bool:
    found = await asyncio.gather(*(answers_in(fake, g, question, needle) for g in guilds.values()))
    return all(found)


def test_two_bots_follow_an_outside_index_run_within_ten_seconds(postgres_index, fake_embedder, tmp_path):
    """`corpus-bot index` (the real command line, another process) adds an article to the index
    both bots serve, with the default poll interval: both answer with it within the bound."""
    add_zebra(postgres_index)

    async def main():
        async with two_bots(postgres_index, fake_embedder) as (bots, fake, guilds):
            assert not any([await answers_in(fake, g, ZEBRA, "zebra") for g in guilds.values()])
            done = await asyncio.to_thread(harness, tmp_path, "index", env=store_env(postgres_index))
            assert done.returncode == 0 and "1 changed" in done.stdout, done.stderr[-500:]
            seconds = await until(lambda: both_answer(fake, guilds, ZEBRA, "zebra"), BOUND_S)
            print(f"\nboth bots answered from the outside run {seconds:.2f} s after it ended")
            generation = committed_generation(postgres_index)
            assert [bot.serving.index.meta["generation"] for bot in bots] == [generation, generation]

    run(main(), timeout=60)


def test_two_bot_processes_follow_an_outside_index_run_within_ten_seconds(postgres_index, tmp_path):
    """Each bot in a process of its own (one shard each, the same INDEX_URL), as two `corpus-bot
    run` on two hosts: both answer, and both answer with what an outside `corpus-bot index` adds."""
    settings = replace(postgres_index, ask_cooldown_seconds=0)
    add_zebra(postgres_index)

    async def main():
        async with FakeDiscord() as fake:
            guilds = guild_on_each_shard(fake)
            context = multiprocessing.get_context("spawn")
            bots = [
                context.Process(
                    target=serve_one_shard,
                    args=(
                        with_shards(settings, {"SHARD_COUNT": "2", "SHARD_IDS": str(shard)}),
                        fake.base_url,
                        fake.gateway_url,
                    ),
                    daemon=True,
                )
                for shard in (0, 1)
            ]
            for bot in bots:
                bot.start()
            try:

                async def both_serve() -> bool:
                    try:
                        return await both_answer(fake, guilds, "Where did the talks resume?", "")
                    except (RuntimeError, TimeoutError, AssertionError):
                        return False  # a shard not connected yet, or its bot still starting

                await until(both_serve, 60)
                assert not any([await answers_in(fake, g, ZEBRA, "zebra") for g in guilds.values()])
                done = await asyncio.to_thread(harness, tmp_path, "index", env=store_env(postgres_index))
                assert done.returncode == 0 and "1 changed" in done.stdout, done.stderr[-500:]
                seconds = await until(lambda: both_answer(fake, guilds, ZEBRA, "zebra"), BOUND_S)
                print(f"\nboth bot processes answered from the outside run {seconds:.2f} s after it ended")
                assert all(bot.is_alive() for bot in bots)
            finally:
                for bot in bots:
                    bot.terminate()
                    bot.join(10)

    run(main(), timeout=120)


def test_a_reindex_in_one_bot_is_served_by_the_other(postgres_index, fake_embedder):
    add_zebra(postgres_index)

    async def main():
        async with two_bots(postgres_index, fake_embedder) as (bots, fake, guilds):
            admin = fake.make_member(permissions=MANAGE_GUILD)
            rec = await fake.send_slash("reindex", member=admin, guild_id=guilds[0])
            outcome = await reindex_outcome(rec)
            assert outcome["title"] == "Re-index finished" and "1 changed" in outcome["description"]
            assert await answers_in(fake, guilds[0], ZEBRA, "zebra")  # the bot that ran it, at once
            seconds = await until(lambda: answers_in(fake, guilds[1], ZEBRA, "zebra"), BOUND_S)
            print(f"\nthe other bot answered from the /reindex {seconds:.2f} s after it finished")
            assert bots[1].serving.job is None  # it ran nothing itself
            # The replaced snapshots ended their transactions: one snapshot open per bot, none
            # left behind to hold back VACUUM.
            assert backends(postgres_index.index_url, "idle in transaction") == 2 * snapshot.CONNECTIONS

    run(main(), timeout=60)


def backends(url: str, state: str) -> int:
    """Connections to url's database in `state` (other than the one asking)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND state = %s AND pid <> pg_backend_pid()",
            (state,),
        ).fetchone()[0]


def terminate(url: str, state: str) -> int:
    """End the server side of the connections to url's database in `state` (what a server
    restart or a dropped network does to them); how many there were."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND state = %s AND pid <> pg_backend_pid()",
            (state,),
        ).fetchone()[0]


def test_broken_connections_cost_a_warning_and_a_retry(postgres_index, fake_embedder, caplog):
    """The poll's connection broken: one warning, the held snapshot keeps answering, the next poll
    connects again. The snapshot's own connection broken: that question gets the private
    "cannot be read right now" reply, and the next poll loads a new snapshot, which answers."""
    question = "Who led the resistance in Kunduz?"

    async def main():
        async with two_bots(postgres_index, fake_embedder, poll_interval=0.2) as (bots, fake, guilds):
            serving = bots[0].serving
            first = serving._snapshot
            await asyncio.sleep(0.5)  # both bots have polled: their watches are connected
            with caplog.at_level(logging.WARNING, logger="bot.serving"):
                assert terminate(postgres_index.index_url, "idle") == 2  # both bots' watches
                assert await answers_in(fake, guilds[0], question, "Kunduz")  # the snapshot is untouched
                await asyncio.sleep(1.0)  # several polls: the first fails, the next connect again
                assert serving._snapshot is first
                polls = [r.getMessage() for r in caplog.records if r.name == "bot.serving"]
                follow = [m for m in polls if "still serving the previous one" in m]
                assert len(follow) == 2, polls  # one per bot, not one per poll
                assert "terminating connection due to administrator command" in follow[0]

                caplog.clear()
                assert (
                    terminate(postgres_index.index_url, "idle in transaction") == 2 * snapshot.CONNECTIONS
                )  # both snapshots
                rec = await fake.send_slash("ask", {"question": question}, guild_id=guilds[0])
                reply = await rec.wait_final(timeout=10)
                assert reply.ephemeral and reply.content.startswith("The index cannot be read right now"), reply.content
                seconds = await until(lambda: answers_in(fake, guilds[0], question, "Kunduz"), BOUND_S)
                await until(lambda: answers_in(fake, guilds[1], question, "Kunduz"), BOUND_S)
                print(f"\nanswering again {seconds:.2f} s after the snapshot's connection broke")
            assert serving._snapshot is not first and first.closed.is_set()

    run(main(), timeout=60)


def test_a_poll_is_one_cheap_query(postgres_index, fake_embedder):
    """PostgresWatch.poll: one one-row query over its open connection."""
    watch = PostgresWatch(postgres_index.index_url)
    try:
        first = watch.poll()
        assert first is not None and first.generation == committed_generation(postgres_index)
        times = []
        for _ in range(300):
            started = time.perf_counter()
            seen = watch.poll()
            times.append((time.perf_counter() - started) * 1000)
        assert seen == first  # nothing committed: the same generation, no change counted
        add_zebra(postgres_index)
        index_elsewhere(postgres_index)
        changed = watch.poll()
        assert changed.generation == committed_generation(postgres_index) != first.generation
        assert changed.commits == first.commits + 1
    finally:
        watch.close()
    p50, p95 = statistics.median(times), statistics.quantiles(times, n=20)[-1]
    print(f"\nPostgresWatch.poll: p50 {p50:.3f} ms, p95 {p95:.3f} ms over {len(times)} polls")
    assert p50 < 20, times


def test_an_empty_database_is_no_index_until_a_run_commits(fake_settings, postgres_url, fake_embedder):
    """Bots started on an empty database say there is no index yet and serve the first index a
    run commits."""
    settings = replace(fake_settings, index_url=postgres_url)
    watch = PostgresWatch(postgres_url)
    try:
        assert watch.poll() is None
    finally:
        watch.close()

    async def main():
        async with two_bots(settings, fake_embedder, poll_interval=0.2) as (bots, fake, guilds):
            rec = await fake.send_slash("ask", {"question": "Kunduz"}, guild_id=guilds[0])
            assert "There is no index yet" in (await rec.wait_final()).content
            await asyncio.to_thread(index_elsewhere, settings)
            await until(lambda: both_answer(fake, guilds, "Who led the resistance in Kunduz?", "Kunduz"), BOUND_S)

    run(main(), timeout=60)
