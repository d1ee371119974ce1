"""The bot is an AutoShardedBot: the real bot against the fake Discord with two shards, as Discord
shards a bot in thousands of servers (every guild's events on shard (guild_id >> 22) % count)."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import replace

import pytest
from click.testing import CliRunner

from bot.app import create_bot
from bot.cli import cli
from embeddings.config import Settings
from tests.fake_discord import FakeDiscord, run, running_bot

QUESTION = "Who led the resistance in Kunduz?"


def shard_of(guild_id: int, count: int) -> int:
    return (guild_id >> 22) % count


def with_shards(settings: Settings, env: dict[str, str]) -> Settings:
    parsed = Settings.from_env(env)
    return replace(settings, shard_count=parsed.shard_count, shard_ids=parsed.shard_ids)


def guild_on_each_shard(fake: FakeDiscord) -> dict[int, int]:
    """{shard id: guild id} for two shards: the fake's guild and one added on the other shard."""
    other = fake.add_guild(shard=(1 - shard_of(fake.guild_id, 2), 2))
    return {shard_of(g, 2): g for g in (fake.guild_id, other)}


async def no_identify_wait(shard_id, *, initial=False):
    """discord.py waits 5 s before each IDENTIFY after the first (Discord's identify rate
    limit); the fake has no such limit."""


async def start(settings, embedder, fake):
    # Commands synced globally: guild sync reaches one guild only.
    bot = create_bot(settings, embedder=embedder, sync_global=True, guild_ready_timeout=0.05)
    bot.before_identify_hook = no_identify_wait
    return bot


async def answered(fake, guild_id: int) -> str:
    rec = await fake.send_slash("ask", {"question": QUESTION}, guild_id=guild_id)
    final = await rec.wait_final(timeout=10)
    delivered_on = [shard for shard, event, d in fake.dispatched if event == "INTERACTION_CREATE" and d is rec.payload]
    assert delivered_on == [[shard_of(guild_id, 2), 2]]  # Discord sends it on the guild's shard only
    return final.data["content"]


@pytest.mark.parametrize(
    ("env", "recommended"),
    [
        ({}, 2),  # no setting: Discord's recommended count
        ({"SHARD_COUNT": "2"}, 1),  # the setting wins over Discord's recommendation
    ],
)
def test_two_shards_each_get_their_guilds_and_answer_ask(fake_index, fake_embedder, env, recommended):
    settings = with_shards(fake_index, env)

    async def main():
        async with FakeDiscord() as fake:
            fake.recommended_shards = recommended
            guilds = guild_on_each_shard(fake)
            bot = await start(settings, fake_embedder, fake)
            async with running_bot(bot, fake):
                assert sorted(p["shard"] for p in fake.identify_payloads) == [[0, 2], [1, 2]]
                assert sorted(bot.shards) == [0, 1] and bot.shard_count == 2
                # each guild arrived on its shard's connection, and the bot knows both
                creates = {int(d["id"]): shard for shard, event, d in fake.dispatched if event == "GUILD_CREATE"}
                assert creates == {g: [s, 2] for s, g in guilds.items()}
                assert {g.id: g.shard_id for g in bot.guilds} == {g: s for s, g in guilds.items()}
                for guild_id in guilds.values():
                    assert "Kunduz" in await answered(fake, guild_id)

    run(main())


def test_shard_ids_runs_only_those_shards(fake_index, fake_embedder, caplog):
    """SHARD_COUNT=2 SHARD_IDS=1: this process runs shard 1 (another runs shard 0), and says so."""
    settings = with_shards(fake_index, {"SHARD_COUNT": "2", "SHARD_IDS": "1"})

    async def main():
        async with FakeDiscord() as fake:
            fake.recommended_shards = 1  # not asked: the count is set
            guilds = guild_on_each_shard(fake)
            bot = await start(settings, fake_embedder, fake)
            with caplog.at_level(logging.INFO, logger="bot.app"):
                async with running_bot(bot, fake):
                    assert [p["shard"] for p in fake.identify_payloads] == [[1, 2]]
                    assert list(bot.shards) == [1]
                    assert [g.id for g in bot.guilds] == [guilds[1]]
                    assert "/gateway/bot" not in [r.path for r in fake.requests]
                    assert "Kunduz" in await answered(fake, guilds[1])
                    # shard 0's guild is another process's: no connection here receives its events
                    with pytest.raises(RuntimeError, match="no identified gateway connection serves"):
                        await fake.send_slash("ask", {"question": QUESTION}, guild_id=guilds[0])
            assert "in 1 servers, shards 1 of 2" in caplog.text

    run(main())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SHARD_COUNT": "1"}, "Error: Discord requires more shards than SHARD_COUNT=1 (gateway closed with 4011"),
        # Discord's recommendation fell short (the bot grew since it was fetched)
        ({}, "Error: Discord requires more shards than it recommended when the bot started"),
    ],
)
def test_too_few_shards_for_discord_is_one_line(fake_settings, fake_embedder, restore_logging, env, message):
    """`corpus-bot run` with fewer shards than Discord requires (it closes the gateway with 4011):
    one Error line that says what to do, no traceback."""
    fake = FakeDiscord()
    fake.required_shards = 2
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(fake.start(), loop).result(5)
        token = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GabcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"
        settings = replace(with_shards(fake_settings, env), discord_token=token)
        with fake.patched():
            result = CliRunner().invoke(cli, ["run"], obj=settings, catch_exceptions=False)
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    assert result.exit_code == 1
    last = result.output.rstrip("\n").split("\n")[-1]
    assert last.startswith(message)
    assert "Traceback" not in result.output
    assert [p["shard"] for p in fake.identify_payloads] == [[0, 1]]


def test_two_processes_with_their_own_shard_ids_serve_every_guild(fake_index, fake_embedder):
    """SHARD_COUNT=2 in both, SHARD_IDS=0 in one and SHARD_IDS=1 in the other (two bots here):
    each serves its shard's guild, and together they answer in both."""

    async def main():
        async with FakeDiscord() as fake:
            guilds = guild_on_each_shard(fake)
            bots = [
                await start(with_shards(fake_index, {"SHARD_COUNT": "2", "SHARD_IDS": str(i)}), fake_embedder, fake)
                for i in (0, 1)
            ]
            async with running_bot(bots[0], fake), running_bot(bots[1], fake):
                assert sorted(p["shard"] for p in fake.identify_payloads) == [[0, 2], [1, 2]]
                assert [[g.id for g in bot.guilds] for bot in bots] == [[guilds[0]], [guilds[1]]]
                for guild_id in guilds.values():
                    assert "Kunduz" in await answered(fake, guild_id)

    run(main())
