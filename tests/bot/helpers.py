"""Bot test helpers: start the real bot (create_bot) against tests/fake_discord.py, and check
every message it sent against Discord's limits and the no-ping rule, independently of bot/render.py."""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import replace

import pytest

from bot.app import create_bot
from embeddings.stores import index_store
from tests.fake_discord import FakeDiscord, running_bot
from tests.helpers import FakeEmbedder

#: The stores the bot serves from: the SQLite file (INDEX_PATH) and PostgreSQL (INDEX_URL).
STORES = ("sqlite", "postgres")


def both_stores(fixture: str):
    """Run a test once per store: `fixture` (fake_index, shipped_store, ...) reads request.param."""
    return pytest.mark.parametrize(fixture, STORES, indirect=True)


def in_store(request, settings, embedder=None, *, store: str | None = None):
    """settings with their corpus indexed (the fake embedder unless given) in `store`, by default
    the one the test's parameter names: the SQLite file at settings.index_path, or a fresh
    PostgreSQL database (settings.index_url) from the `postgres_url` fixture."""
    if (store or getattr(request, "param", "sqlite")) == "postgres":
        settings = replace(settings, index_url=request.getfixturevalue("postgres_url"))
    index_store(settings).run_index(settings, embedder=embedder or FakeEmbedder())
    return settings


def index_rows(settings, sql: str) -> list[tuple]:
    """The rows of a query on the index the settings name, whichever store it is in."""
    if settings.index_url:
        import psycopg

        with psycopg.connect(settings.index_url) as conn:
            return conn.execute(sql).fetchall()
    import sqlite3

    conn = sqlite3.connect(settings.index_path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def committed_generation(settings) -> str:
    return index_rows(settings, "SELECT value FROM index_meta WHERE key = 'generation'")[0][0]


@contextlib.asynccontextmanager
async def started_bot(
    settings,
    embedder,
    *,
    index_embedder_factory=None,
    progress_interval=0.1,
    view_timeout=None,
    poll_interval=None,
    prepare=None,
    token="fake-bot-token",
    admin_channel=False,
    **fake_kwargs,
):
    """A FakeDiscord and the product bot logged in to it (with token), commands synced to the fake
    guild. prepare(fake) runs before the bot connects (e.g. to add roles to the guild);
    admin_channel: the fake's text channel is ADMIN_CHANNEL_ID. /reindex
    runs in a child process, which makes its own embedder: by default the fake one when settings
    name it (tests.bot.processes.py has others)."""
    if index_embedder_factory is None and settings.embedding_model == FakeEmbedder.name:
        index_embedder_factory = FakeEmbedder
    async with FakeDiscord(**fake_kwargs) as fake:
        if prepare is not None:
            prepare(fake)
        settings = replace(settings, discord_guild_id=fake.guild_id)
        if admin_channel:
            settings = replace(settings, admin_channel_id=fake.channel_id)
        bot = create_bot(
            settings,
            embedder=embedder,
            index_embedder_factory=index_embedder_factory,
            guild_ready_timeout=0.05,
        )
        bot.progress_interval = progress_interval
        if poll_interval is not None:
            bot.serving.poll_interval = poll_interval
        if view_timeout is not None:
            bot.view_timeout = view_timeout
        async with running_bot(bot, fake, token=token):
            yield bot, fake


class GatedEmbedder:
    """Wraps an embedder; encode() waits until the test opens the gate (questions held in the bot)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name, self.dimension, self.max_tokens = inner.name, inner.dimension, inner.max_tokens
        self.entered = threading.Event()
        self.gate = threading.Event()

    def encode(self, texts, *, on_batch=None):
        self.entered.set()
        assert self.gate.wait(20), "the test never opened the gate"
        return self.inner.encode(texts, on_batch=on_batch)

    def count_tokens(self, text):
        return self.inner.count_tokens(text)

    def token_ids(self, texts):
        return self.inner.token_ids(texts)

    def token_vectors(self, tokens):
        return self.inner.token_vectors(tokens)


def u16(text: str | None) -> int:
    return len((text or "").encode("utf-16-le")) // 2


def check_message(data: dict) -> None:
    """Discord's message and embed limits, and allowed_mentions that can ping nobody."""
    assert u16(data.get("content")) <= 2000
    embeds = data.get("embeds") or []
    assert len(embeds) <= 10
    total = 0
    for e in embeds:
        assert u16(e.get("title")) <= 256
        assert u16(e.get("description")) <= 4096
        assert u16(e.get("footer", {}).get("text")) <= 2048
        assert u16(e.get("author", {}).get("name")) <= 256
        fields = e.get("fields") or []
        assert len(fields) <= 25
        for f in fields:
            assert u16(f["name"]) <= 256 and u16(f["value"]) <= 1024
        total += sum(
            u16(x)
            for x in (
                e.get("title"),
                e.get("description"),
                e.get("footer", {}).get("text"),
                e.get("author", {}).get("name"),
            )
        )
        total += sum(u16(f["name"]) + u16(f["value"]) for f in fields)
    assert total <= 6000, total
    for row in data.get("components") or []:
        assert len(row["components"]) <= 5
        for c in row["components"]:
            assert u16(c.get("label")) <= 80
            for o in c.get("options") or []:
                assert u16(o["label"]) <= 100 and u16(o.get("description")) <= 100
    am = data.get("allowed_mentions")
    assert (
        am is not None
        and am.get("parse") == []
        and not am.get("users")
        and not am.get("roles")
        and not am.get("replied_user")
    ), am


# A mention, heading, masked link or code fence that Discord would render as such.
LIVE_MARKUP = re.compile(
    r"(?<!\\)<(@[!&]?|#)\d+(?<!\\)>|(?<!\\)<@|@everyone|@here|(?<!\\)\[[^\]\n]*(?<!\\)\]\(|(?m:^[ \t]*#{1,3} )"
    r"|(?m:^-# )|(?<!\\)```|(?m:^[ \t]*> )"
)


def check_sent(rec) -> None:
    """Every message-bearing request of an interaction respects the limits and pings nobody."""
    sent = [e for e in rec.events if e.is_content]
    assert sent, rec
    for e in sent:
        check_message(e.data)


def texts_of(data: dict) -> list[str]:
    """The texts that carry corpus or user words (the bot's own '-# results…' markup removed)."""
    out = [re.sub(r"(?m)^-# (?=results |filters: |These buttons)", "", data.get("content") or "")]
    for e in data.get("embeds") or []:
        out += [e.get("title") or "", e.get("description") or ""]
        out += [f["value"] for f in e.get("fields") or []]
    return out
