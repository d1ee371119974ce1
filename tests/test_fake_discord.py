"""Proves tests/fake_discord.py works with the real, unpatched discord.py client,
using a tiny bot defined here (not the product bot)."""

from __future__ import annotations

import asyncio
import io
import logging
import time

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.fake_discord import (
    MANAGE_GUILD,
    ROUTE_CALLBACK,
    ROUTE_FOLLOWUP,
    FakeDiscord,
    run,
    running_bot,
)


class ToggleView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=60)
        self.clicks = 0

    @discord.ui.button(label="More", custom_id="more", style=discord.ButtonStyle.primary)
    async def more(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.clicks += 1
        await interaction.response.edit_message(content=f"clicked {self.clicks}", view=self)


def build_bot() -> commands.Bot:
    bot = commands.Bot(
        command_prefix="!",
        intents=discord.Intents.default(),
        guild_ready_timeout=0.05,
        allowed_mentions=discord.AllowedMentions.none(),
    )
    bot.setup_ran = False  # type: ignore[attr-defined]
    bot.errors = []  # type: ignore[attr-defined]

    @bot.tree.command(name="echo", description="Echo text in an embed")
    @app_commands.describe(text="what to echo")
    async def echo(interaction: discord.Interaction, text: str) -> None:
        await interaction.response.defer()
        await interaction.followup.send(embed=discord.Embed(title="Echo", description=text))

    @bot.tree.command(name="admin", description="Manage-guild only")
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.checks.has_permissions(manage_guild=True)
    async def admin(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("admin ok", ephemeral=True)

    @bot.tree.command(name="panel", description="Shows a button")
    async def panel(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("clicked 0", view=ToggleView())

    @bot.tree.command(name="limited", description="Cooldown 1 per 60 s")
    @app_commands.checks.cooldown(1, 60.0)
    async def limited(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("ran")

    @bot.tree.command(name="pick", description="Autocomplete")
    async def pick(interaction: discord.Interaction, fruit: str) -> None:
        await interaction.response.send_message(f"picked {fruit}")

    @pick.autocomplete("fruit")
    async def pick_auto(interaction: discord.Interaction, current: str):
        fruits = ["apple", "apricot", "banana"]
        return [app_commands.Choice(name=f, value=f) for f in fruits if f.startswith(current)]

    @bot.tree.command(name="report", description="Ephemeral defer, file followup, then edit")
    async def report(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.followup.send("working", file=discord.File(io.BytesIO(b"a,b\n1,2\n"), "r.csv"))
        extra = await interaction.followup.send("second", ephemeral=True, wait=True)
        await interaction.edit_original_response(content="done")
        await extra.edit(content="second (edited)")

    @bot.tree.context_menu(name="Quote")
    async def quote(interaction: discord.Interaction, message: discord.Message) -> None:
        await interaction.response.send_message(f"> {message.content}", ephemeral=True)

    @bot.tree.error
    async def on_app_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        bot.errors.append(error)  # type: ignore[attr-defined]
        if isinstance(error, app_commands.MissingPermissions):
            msg = "You need Manage Server."
        elif isinstance(error, app_commands.CommandOnCooldown):
            msg = f"Slow down ({error.retry_after:.0f}s)."
        else:
            msg = "Something went wrong."
        if interaction.response.is_done():
            await interaction.followup.send(msg, ephemeral=True)
        else:
            await interaction.response.send_message(msg, ephemeral=True)

    async def setup_hook() -> None:
        guild = discord.Object(id=bot.fake_guild_id)  # type: ignore[attr-defined]
        bot.tree.copy_global_to(guild=guild)
        await bot.tree.sync(guild=guild)
        bot.setup_ran = True  # type: ignore[attr-defined]

    bot.setup_hook = setup_hook  # type: ignore[method-assign]
    return bot


async def start(fake: FakeDiscord) -> commands.Bot:
    bot = build_bot()
    bot.fake_guild_id = fake.guild_id  # type: ignore[attr-defined]
    return bot


def with_bot(body, **fake_kwargs):
    """Run ``body(bot, fake)`` against a started fake + logged-in bot."""

    async def main():
        async with FakeDiscord(**fake_kwargs) as fake:
            bot = await start(fake)
            async with running_bot(bot, fake):
                await body(bot, fake)

    run(main(), timeout=30)


# --------------------------------------------------------------------------- tests


def test_login_ready_setup_hook_and_sync():
    async def body(bot, fake):
        assert bot.is_ready()
        assert bot.setup_ran
        assert bot.user.id == int(fake.bot_user["id"])
        assert bot.application_id == fake.app_id
        guild = bot.get_guild(fake.guild_id)
        assert guild is not None and guild.name == "Fake Guild"
        assert guild.get_channel(fake.channel_id) is not None
        assert guild.me is not None and guild.default_role.id == fake.guild_id
        names = {(c["name"], c["type"]) for c in fake.guild_commands[fake.guild_id]}
        assert {("echo", 1), ("admin", 1), ("panel", 1), ("limited", 1), ("pick", 1), ("Quote", 3)} <= names
        admin = fake.command("admin")
        assert admin["guild_id"] == str(fake.guild_id)
        assert int(admin["default_member_permissions"]) == MANAGE_GUILD
        assert fake.can_use("admin", fake.make_member(permissions=0)) is False
        assert fake.can_use("admin", fake.make_member(permissions=MANAGE_GUILD)) is True
        # the client requested (and got) zlib-stream transport compression
        assert fake.gateway_query.get("compress") == "zlib-stream"
        assert fake.identify_payloads[0]["token"] == "fake-bot-token"

    with_bot(body)


def test_echo_defers_then_followup_with_embed():
    async def body(bot, fake):
        rec = await fake.send_slash("echo", {"text": "hello @everyone"})
        final = await rec.wait_final(timeout=5)
        assert rec.callback_type == 5 and rec.deferred
        assert rec.response_delay < 3.0
        assert final.kind == "followup"
        assert final.embeds[0]["description"] == "hello @everyone"
        assert final.embeds[0]["title"] == "Echo"
        # the bot-wide AllowedMentions.none() is sent with the followup
        assert final.allowed_mentions == {"parse": []}
        assert not final.ephemeral and not rec.ephemeral
        # Discord semantics: the first followup after a defer edits the loading message
        assert rec.original["embeds"][0]["description"] == "hello @everyone"
        assert rec.followups == []
        assert not rec.original["flags"] & (1 << 7)

    with_bot(body)


def test_permission_check_denies_then_allows():
    async def body(bot, fake):
        denied = await fake.send_slash("admin", member=fake.make_member(permissions=0))
        ev = await denied.wait_final()
        assert ev.kind == "callback" and ev.callback_type == 4
        assert ev.content == "You need Manage Server."
        assert ev.ephemeral and denied.ephemeral
        assert isinstance(bot.errors[-1], app_commands.MissingPermissions)

        allowed = await fake.send_slash("admin", member=fake.make_member(permissions=MANAGE_GUILD))
        ev = await allowed.wait_final()
        assert ev.content == "admin ok" and ev.ephemeral

    with_bot(body)


def test_cooldown_error_handler():
    async def body(bot, fake):
        member = fake.make_member(permissions=0)
        first = await fake.send_slash("limited", member=member)
        assert (await first.wait_final()).content == "ran"
        second = await fake.send_slash("limited", member=member)
        ev = await second.wait_final()
        assert ev.content.startswith("Slow down") and ev.ephemeral
        other = await fake.send_slash("limited", member=fake.make_member())
        assert (await other.wait_final()).content == "ran"

    with_bot(body)


def test_button_click_edits_message():
    async def body(bot, fake):
        rec = await fake.send_slash("panel")
        ev = await rec.wait_final()
        assert ev.content == "clicked 0"
        assert ev.components[0]["components"][0]["custom_id"] == "more"

        click = await fake.click(rec, "more")
        ev = await click.wait_final()
        assert ev.kind == "callback" and ev.callback_type == 7
        assert ev.content == "clicked 1"
        assert rec.original["content"] == "clicked 1"

        click2 = await fake.click(rec, "more")
        assert (await click2.wait_final()).content == "clicked 2"

    with_bot(body)


def test_autocomplete_and_message_context_menu():
    async def body(bot, fake):
        rec = await fake.autocomplete("pick", {"fruit": "ap"}, focused="fruit")
        await rec.wait_response()
        assert rec.callback_type == 8
        assert [c["value"] for c in rec.choices] == ["apple", "apricot"]

        ctx = await fake.send_message_command("Quote", "to be quoted")
        ev = await ctx.wait_final()
        assert ev.content == "> to be quoted" and ev.ephemeral

    with_bot(body)


def test_dm_slash_command():
    async def body(bot, fake):
        user = fake.make_user(name="dmuser")
        rec = await fake.send_slash("echo", {"text": "in dm"}, dm_user=user)
        # echo is global too, so it resolves in DMs
        ev = await rec.wait_final()
        assert ev.embeds[0]["description"] == "in dm"
        assert "guild_id" not in rec.original

    with_bot(body)


def test_invalid_token_raises_login_failure():
    async def main():
        async with FakeDiscord() as fake:
            fake.invalid_token = True
            bot = await start(fake)
            with pytest.raises(discord.LoginFailure):
                async with running_bot(bot, fake):
                    pass  # pragma: no cover
            assert bot.setup_ran is False
            assert bot.is_closed()

    run(main())


def test_followup_429_is_retried_and_delivered(caplog):
    async def body(bot, fake):
        fake.rate_limit_next(ROUTE_FOLLOWUP, retry_after=0.2, method="POST")
        with caplog.at_level(logging.WARNING, logger="discord.webhook.async_"):
            rec = await fake.send_slash("echo", {"text": "after 429"})
            ev = await rec.wait_final(timeout=5)
        statuses = [(e.kind, e.status) for e in rec.events]
        assert statuses == [("callback", 200), ("followup", 429), ("followup", 200)]
        assert rec.events[2].time - rec.events[1].time >= 0.2
        assert ev.embeds[0]["description"] == "after 429"
        assert "rate limited" in caplog.text

    with_bot(body)


def test_unknown_interaction_reaches_error_path():
    async def body(bot, fake):
        fake.unknown_interaction_next(ROUTE_CALLBACK)
        rec = await fake.send_slash("echo", {"text": "x"})
        # defer fails with 404/10062; the tree's on_error then tries to reply, which also
        # fails (interaction not acknowledged) -> nothing delivered.
        await rec.wait_for(lambda r: len(r.events) >= 1)
        await asyncio.sleep(0.2)
        assert rec.events[0].status == 404
        assert rec.callback is None
        err = bot.errors[-1]
        assert isinstance(err, app_commands.CommandInvokeError)
        assert isinstance(err.original, discord.NotFound) and err.original.code == 10062

    with_bot(body)


def test_late_callback_is_unknown_interaction():
    async def body(bot, fake):
        rec = await fake.send_slash("echo", {"text": "slow"})
        await rec.wait_final()
        assert rec.response_delay is not None

    # a deadline of 0 s makes every callback "too late"
    async def late(bot, fake):
        rec = await fake.send_slash("admin", member=fake.make_member(permissions=MANAGE_GUILD))
        await rec.wait_for(lambda r: r.events)
        await asyncio.sleep(0.1)
        assert rec.events[0].status == 404 and rec.callback is None

    with_bot(body)
    with_bot(late, callback_deadline=0.0)


def test_heartbeats_on_time():
    async def body(bot, fake):
        await asyncio.sleep(1.4)
        assert len(fake.heartbeats) >= 3  # one immediately after HELLO, then every 0.5 s
        assert max(fake.heartbeat_gaps()) <= fake.heartbeat_interval + 0.4
        # Acks arrive and are measured. Not "< interval": discord.py's keep-alive thread stamps the
        # send time only after the send future resolves, so on a busy machine a loopback ack can
        # land first and read as a whole interval (gateway.py, KeepAliveHandler.run).
        assert bot.latency <= fake.heartbeat_interval + 0.4

    with_bot(body, heartbeat_interval_ms=500)


def test_blocking_the_event_loop_makes_heartbeats_late():
    async def body(bot, fake):
        await asyncio.sleep(0.6)
        time.sleep(1.2)  # what a CPU-bound call on the event loop would do
        await asyncio.sleep(0.6)
        assert max(fake.heartbeat_gaps()) > fake.heartbeat_interval + 0.4

    with_bot(body, heartbeat_interval_ms=500)


def test_ephemeral_defer_multipart_followup_and_edits():
    async def body(bot, fake):
        rec = await fake.send_slash("report")
        await rec.wait_for(lambda r: len(r.content_events) >= 4)
        cb, first, second, edit_orig, edit_second = [e for e in rec.events if e.ok]
        assert cb.callback_type == 5 and cb.data["flags"] == 64
        # multipart: payload_json recorded as the payload, file content kept
        assert first.kind == "followup" and first.content == "working"
        assert first.files[0]["filename"] == "r.csv" and first.files[0]["content"] == b"a,b\n1,2\n"
        assert first.payload["attachments"][0]["filename"] == "r.csv"
        # the first followup replaced the ephemeral "thinking" message (still ephemeral)
        assert first.message["id"] == rec.original["id"] and first.message["flags"] & 64
        assert second.kind == "followup" and second.ephemeral
        assert edit_orig.kind == "edit" and edit_orig.path.endswith("/messages/@original")
        assert edit_second.kind == "edit" and edit_second.path.endswith(second.message["id"])
        assert rec.original["content"] == "done" and rec.ephemeral
        assert [m["content"] for m in rec.followups] == ["second (edited)"]

    with_bot(body)
