"""The bot token never appears in the logs (at any level) or in anything sent to Discord users:
a full `run_bot` (the `corpus-bot run` path, with its logging set-up) at DEBUG against the fake
Discord: login, commands, exceptions whose message contains the token, a Discord error, close;
then a run whose login Discord rejects."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from dataclasses import replace

import click
import pytest

import bot.app
import bot.logs
from tests.fake_discord import ROUTE_FOLLOWUP, FakeDiscord

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GabcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"


class Raw(logging.Handler):
    """Sees every record before any redaction (it is placed first among the root handlers)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.texts.append(text)


def test_token_never_logged_or_sent(fake_index, fake_embedder, monkeypatch, restore_logging):
    written = io.StringIO()  # what the product's log handler writes (normally stderr)
    raw = Raw()
    real_setup = bot.logs.setup_logging

    def setup_logging_at_debug(token):
        root = logging.getLogger()
        before = list(root.handlers)
        real_setup(token)  # the product's set-up: discord.py's handler + the redaction filter
        root.setLevel(logging.DEBUG)
        for handler in root.handlers:
            if handler not in before:
                handler.setLevel(logging.DEBUG)
                handler.setStream(written)
        root.handlers.insert(0, raw)

    monkeypatch.setattr(bot.logs, "setup_logging", setup_logging_at_debug)
    bots = []
    real_create = bot.app.create_bot

    def create_bot(settings, **options):  # the fake embedder, and a quick ready for the fake guild
        made = real_create(settings, embedder=fake_embedder, guild_ready_timeout=0.05, **options)
        bots.append(made)
        return made

    monkeypatch.setattr(bot.app, "create_bot", create_bot)

    fake = FakeDiscord()
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()

    def on_fake(coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    settings = replace(fake_index, discord_token=TOKEN, discord_guild_id=fake.guild_id)
    outcome: list = []

    def run_in_thread():
        try:
            bot.app.run_bot(settings)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            outcome.append(exc)

    try:
        on_fake(fake.start())
        with fake.patched():
            runner = threading.Thread(target=run_in_thread, daemon=True)
            runner.start()
            deadline = time.monotonic() + 15
            while not (bots and bots[0].is_ready()):
                assert time.monotonic() < deadline and runner.is_alive(), outcome
                time.sleep(0.02)
            the_bot = bots[0]

            async def commands():
                rec = await fake.send_slash("ask", {"question": "What happened in Kunduz?", "results": 2})
                first = await rec.wait_final(timeout=10)
                more_id = first.data["components"][1]["components"][1]["custom_id"]
                for name in ("stats", "sources"):
                    await (await fake.send_slash(name)).wait_final()
                # a Discord error on the way (logged by discord.py at WARNING)
                fake.rate_limit_next(ROUTE_FOLLOWUP, retry_after=0.1)
                await (await fake.send_slash("ask", {"question": "Kunduz"}, member=fake.make_member())).wait_final()

                async def leak(*args, **kwargs):
                    raise RuntimeError(f"could not connect with token {TOKEN}")

                the_bot.serving.search = leak  # an exception inside a command, holding the token
                failed = [
                    await fake.send_slash("ask", {"question": "Kunduz"}, member=fake.make_member()),
                    await fake.click(rec, more_id),
                ]
                return [await r.wait_final() for r in failed]

            replies = on_fake(commands(), timeout=30)
            asyncio.run_coroutine_threadsafe(the_bot.close(), the_bot.loop).result(10)
            runner.join(10)
            assert outcome == [None]
            assert all(
                r.content == "Something went wrong; the error was logged. Please try again later." for r in replies
            )

            # the same at login: Discord rejects the token
            fake.invalid_token = True
            with pytest.raises(click.ClickException) as rejected:
                bot.app.run_bot(settings)
            assert "Discord rejected DISCORD_TOKEN" in rejected.value.message
            assert TOKEN not in rejected.value.message
    finally:
        on_fake(fake.stop())
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(5)

    assert fake.identify_payloads[0]["token"] == TOKEN  # the bot did log in with it
    log_text = written.getvalue()
    leaks = [line for line in log_text.splitlines() if TOKEN in line]
    assert not leaks, "\n".join(log_text.splitlines()[-200:])
    # the exceptions holding the token were logged, with tracebacks, redacted
    assert log_text.count(f"RuntimeError: could not connect with token {bot.logs.REDACTED}") == 2
    assert "Traceback" in log_text and "DEBUG" in log_text and "rate limited" in log_text
    # ...while the raw records did carry it: the filter, not luck, kept it out
    assert sum(TOKEN in t for t in raw.texts) >= 2
    # nothing sent to Discord (any message, embed, or other request body) holds the token
    for request in fake.requests:
        assert TOKEN not in json.dumps(request.payload), request


@pytest.mark.parametrize("colour", [True, False])
def test_redaction_holds_with_discords_colour_and_plain_formatters(colour):
    """discord.py picks its colour formatter on a terminal or in Docker; that formatter formats
    exc_info itself (ignoring exc_text), which printed the raw traceback before the filter dropped
    exc_info. Every handler, in any order, gets the redacted traceback."""
    import discord.utils

    logger = logging.getLogger("tests.token_secrecy")
    streams = [io.StringIO(), io.StringIO()]
    handlers = [logging.StreamHandler(s) for s in streams]
    fmt = discord.utils._ColourFormatter() if colour else logging.Formatter("%(levelname)s %(message)s")
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    logger.propagate = False
    try:
        bot.logs.install_redaction(TOKEN, logger=logger)
        try:
            raise RuntimeError(f"failed with {TOKEN}")
        except RuntimeError:
            logger.exception("boom %s", TOKEN)
    finally:
        for h in handlers:
            logger.removeHandler(h)
    for s in streams:
        text = s.getvalue()
        assert TOKEN not in text and f"RuntimeError: failed with {bot.logs.REDACTED}" in text, text
        assert f"boom {bot.logs.REDACTED}" in text and "Traceback" in text
