"""Code the bot tests run in other processes: module-level, importable, and light to import.

The /reindex process (bot/index_process.py) calls a factory to make its embedder: here are
tests/helpers.py's fake embedder with ways to hold or end that process at a chosen moment (a
gate is a file, since it is another process). `index_elsewhere` is an index run made outside the
bot, as `corpus-bot index` from cron makes one."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import numpy as np

from embeddings.config import Settings
from embeddings.index import IndexReport, run_index
from tests.helpers import FakeEmbedder


class GatedIndexEmbedder(FakeEmbedder):
    """encode() creates `<gate>.entered`, then waits until the test creates `<gate>`."""

    def __init__(self, gate: str) -> None:
        super().__init__()
        self.gate = Path(gate)

    def encode(self, texts, *, on_batch=None):
        Path(f"{self.gate}.entered").touch()
        deadline = time.monotonic() + 30
        while not self.gate.exists():
            assert time.monotonic() < deadline, "the test never opened the gate"
            time.sleep(0.01)
        return super().encode(texts, on_batch=on_batch)


def killed_at(stage: str) -> FakeEmbedder:
    """The fake embedder, in a process that kills itself with SIGKILL (what the kernel's
    out-of-memory killer sends) at the index job's fault point `stage`."""
    os.environ["CORPUS_BOT_CRASH_AT"] = stage
    return FakeEmbedder()


class MemoryHog(FakeEmbedder):
    """Under an address-space limit of 512 MB above what its process maps now, encode() asks for
    16 GB at once: the MemoryError a pathological input gives a process with a memory limit."""

    def encode(self, texts, *, on_batch=None):
        resource.setrlimit(resource.RLIMIT_AS, (_mapped_bytes() + (512 << 20), resource.RLIM_INFINITY))
        np.ones(1 << 31)  # float64
        raise AssertionError("the allocation should have failed")


def _mapped_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))


def index_elsewhere(settings: Settings) -> IndexReport:
    """The index job of the settings' store (the SQLite file, or PostgreSQL with index_url) with
    the fake embedder, in whatever process calls it (a test's process pool)."""
    if settings.index_url:
        from embeddings.postgres.indexing import run_index as run_postgres_index

        return run_postgres_index(settings, settings.index_url, embedder=FakeEmbedder())
    return run_index(settings, embedder=FakeEmbedder())


def serve_one_shard(settings: Settings, base_url: str, gateway_url: str) -> None:
    """A bot of its own in this process, as `corpus-bot run` starts one, on the shards the settings
    name, against the fake Discord at these URLs, with the fake embedder; until it is terminated."""
    import asyncio

    import discord
    import yarl

    from bot.app import create_bot

    discord.http.Route.BASE = base_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    bot = create_bot(
        settings,
        embedder=FakeEmbedder(),
        index_embedder_factory=FakeEmbedder,
        sync_global=True,  # guild sync reaches one guild only
        guild_ready_timeout=0.05,
    )

    async def no_identify_wait(shard_id, *, initial=False):  # the fake has no identify rate limit
        pass

    bot.before_identify_hook = no_identify_wait
    asyncio.run(bot.start("fake-bot-token"))
