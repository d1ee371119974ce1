"""`corpus-bot run`: token mistakes are one clear line, the token never shows; log redaction."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from contextlib import contextmanager
from dataclasses import replace

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.logs import REDACTED, RedactSecrets, install_redaction
from embeddings.config import Settings
from tests.fake_discord import FakeDiscord

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GabcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"


def invoke(settings: Settings):
    return CliRunner().invoke(cli, ["run"], obj=settings, catch_exceptions=False)


@contextmanager
def serving(fake: FakeDiscord):
    """The fake Discord answering on a loop of its own, as `corpus-bot run` runs its own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(fake.start(), loop).result(5)
        with fake.patched():
            yield
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "Error: DISCORD_TOKEN is not set: copy .env.example to .env"),
        ("Bot " + TOKEN, "Error: DISCORD_TOKEN must be the bare token, without the 'Bot ' prefix"),
        ("1234567890123456789", "Error: DISCORD_TOKEN does not look like a bot token"),
        ('"' + TOKEN + '"', "Error: DISCORD_TOKEN does not look like a bot token"),
    ],
)
def test_token_mistakes_are_one_line(token, message):
    result = invoke(replace(Settings.from_env({}), discord_token=token))
    assert result.exit_code == 1
    assert result.output.startswith(message) and result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output
    if token:
        assert TOKEN not in result.output and "1234567890123456789" not in result.output


def test_run_serves_the_postgresql_index_of_index_url(monkeypatch):
    """`corpus-bot run` no longer refuses INDEX_URL: the bot gets the URL (and serves that database:
    tests/bot/test_shared_index.py and the tests parametrised over both stores)."""
    import bot.app

    started = []
    monkeypatch.setattr(bot.app, "run_bot", lambda settings, **_: started.append(settings))
    url = "postgresql://bot@db.example:5432/corpus"
    result = CliRunner().invoke(cli, ["run"], env={"INDEX_URL": url, "DISCORD_TOKEN": TOKEN}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert [s.index_url for s in started] == [url]


@pytest.mark.parametrize(
    ("installed", "message"),
    [
        (True, "Error: cannot connect to the PostgreSQL index at postgresql://bot@127.0.0.1:1/corpus"),
        (False, "Error: a postgresql:// index needs the postgres extra: pip install 'corpus-bot[postgres]'"),
    ],
)
def test_an_index_url_the_bot_cannot_use_stops_the_start_with_one_line(
    tmp_path, restore_logging, monkeypatch, installed, message
):
    """The real start against the fake Discord, with INDEX_URL naming a port nothing listens on,
    or without the postgres extra: one Error line that says what to do, never the password, no
    traceback."""
    if installed:
        pytest.importorskip("psycopg", reason="needs the postgres extra")
    else:
        monkeypatch.setitem(sys.modules, "psycopg", None)  # what `import psycopg` meets without the extra
    settings = replace(
        Settings.from_env({}),
        discord_token=TOKEN,
        index_path=tmp_path / "none.sqlite3",
        index_url="postgresql://bot:s3cret@127.0.0.1:1/corpus",
    )
    with serving(FakeDiscord()):
        result = invoke(settings)
    assert result.exit_code == 1
    last = result.output.rstrip("\n").split("\n")[-1]
    assert last.startswith(message), last
    assert "Traceback" not in result.output and "s3cret" not in result.output and TOKEN not in result.output


def test_token_rejected_by_discord_is_one_line(tmp_path, restore_logging):
    """The real discord.py login against the fake Discord answering 401 (logs go to stderr first)."""
    fake = FakeDiscord()
    fake.invalid_token = True
    with serving(fake):
        result = invoke(replace(Settings.from_env({}), discord_token=TOKEN, index_path=tmp_path / "none.sqlite3"))
    assert result.exit_code == 1
    last = result.output.rstrip("\n").split("\n")[-1]
    assert last.startswith("Error: Discord rejected DISCORD_TOKEN (401 Unauthorized): reset the token")
    assert "Traceback" not in result.output and TOKEN not in result.output
    assert [r.path for r in fake.requests] == ["/users/@me"]  # nothing loaded, nothing else tried


def test_redaction_filter_hides_the_token_in_messages_args_and_tracebacks():
    logger = logging.getLogger("tests.redaction")
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Keep()
    logger.addHandler(handler)
    logger.propagate = False
    try:
        install_redaction(TOKEN, logger=logger)
        install_redaction(TOKEN, logger=logger)  # idempotent: one filter per handler
        assert sum(isinstance(f, RedactSecrets) for f in handler.filters) == 1
        logger.warning("token is %s", TOKEN)
        logger.warning(f"inline {TOKEN}")
        try:
            raise RuntimeError(f"failed with {TOKEN}")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    assert len(records) == 3
    assert all(TOKEN not in r for r in records), records
    assert records[0] == f"token is {REDACTED}" and records[1] == f"inline {REDACTED}"
    assert f"RuntimeError: failed with {REDACTED}" in records[2]


def test_cooldown_reads_the_bot_settings_and_zero_turns_it_off():
    from types import SimpleNamespace

    from bot.checks import _ask_cooldown

    def interaction(**values):
        return SimpleNamespace(client=SimpleNamespace(settings=replace(Settings.from_env({}), **values)))

    cooldown = _ask_cooldown(interaction(ask_cooldown_rate=4, ask_cooldown_seconds=30))
    assert (cooldown.rate, cooldown.per) == (4, 30)
    assert _ask_cooldown(interaction(ask_cooldown_seconds=0)) is None
