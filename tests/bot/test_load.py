"""Load: 200 /ask interactions delivered at once through the fake Discord, answered by the real
bundled model on the shipped corpus. Every one deferred within 1 s of delivery, every one answered
with quoted passages, the gateway heartbeat never late, memory bounded; the time-to-answer
percentiles are printed (run with -s to see them; docs/reliability.md records them)."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from bot import serving as serving_module
from embeddings.query_model import load_query_embedder
from tests.bot.helpers import check_sent, started_bot
from tests.fake_discord import run

pytestmark = pytest.mark.model

QUESTIONS = [
    "Which cities in the north did the Taliban take?",
    "What happened in Kunduz?",
    "Who led the resistance to the Taliban?",
    "What did the United States say about the withdrawal?",
    "How did the Afghan army respond to the offensive?",
]
N = 200


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def test_two_hundred_questions_at_once(shipped_index):
    assert serving_module.SEARCH_QUEUE_LIMIT >= N  # the default bound takes this burst

    async def main():
        # The question embedder the bot itself loads: the ONNX export made by the index job.
        embedder = load_query_embedder(shipped_index.index_path, shipped_index.embedding_model)
        async with started_bot(shipped_index, embedder, heartbeat_interval_ms=500) as (bot, fake):
            for q in QUESTIONS:  # warm-up: first inferences and caches are not part of the figures
                await (await fake.send_slash("ask", {"question": q}, member=fake.make_member())).wait_final(timeout=10)
            gc.collect()
            rss_start = rss_mb()
            rss: list[float] = []
            gaps: list[float] = []  # between heartbeats during the bursts
            for burst in (1, 2):  # a second burst shows whether memory keeps growing
                started = time.monotonic()
                recs = await asyncio.gather(
                    *(
                        fake.send_slash(
                            "ask", {"question": f"{QUESTIONS[i % len(QUESTIONS)]} ({i})"}, member=fake.make_member()
                        )
                        for i in range(N)
                    )
                )
                delivered = time.monotonic() - started
                finals = await asyncio.gather(*(r.wait_final(timeout=60, settle=0.05) for r in recs))
                elapsed = time.monotonic() - started
                gaps += [b - a for a, b in zip(fake.heartbeats, fake.heartbeats[1:]) if started <= a]
                beats = sum(1 for t in fake.heartbeats if started <= t)
                # A blocked event loop shows as missing heartbeats as well as long gaps.
                assert beats >= int(elapsed / fake.heartbeat_interval) - 1, (beats, elapsed)

                defer = [r.response_delay for r in recs]
                answer = [f.time - r.delivered_at for r, f in zip(recs, finals)]
                print(
                    f"\nburst {burst}: {N} asks (real model, {bot.settings.search_workers} search workers) delivered "
                    f"in {delivered:.2f} s, all answered in {elapsed:.2f} s\n"
                    f"defer delay  p50 {percentile(defer, 50) * 1000:.0f} ms, p99 {percentile(defer, 99) * 1000:.0f} ms, "
                    f"max {max(defer) * 1000:.0f} ms\n"
                    f"time to answer  p50 {percentile(answer, 50):.2f} s, p95 {percentile(answer, 95):.2f} s, "
                    f"p99 {percentile(answer, 99):.2f} s, max {max(answer):.2f} s"
                )
                assert all(r.deferred for r in recs) and max(defer) < 1.0, sorted(defer)[-5:]
                assert all(len(f.embeds) == 5 for f in finals)  # every one answered with passages
                assert max(answer) < 30  # nobody waits long (at ~12 ms a question, 200 take ~2.5 s)
                for r in recs:
                    check_sent(r)
                assert bot.serving.queued == 0
                # the fake Discord lives in this process: drop its recordings, so RSS shows the bot
                del recs, finals
                fake.interactions.clear(), fake.requests.clear(), fake.messages.clear()
                fake._by_id.clear(), fake._by_token.clear()
                gc.collect()
                rss.append(rss_mb())
            print(
                f"heartbeat gaps max {max(gaps):.3f} s (interval {fake.heartbeat_interval:.1f} s); "
                f"RSS {rss_start:.0f} MB -> {rss[0]:.0f} MB after burst 1 -> {rss[1]:.0f} MB after burst 2"
            )
            assert gaps and max(gaps) <= fake.heartbeat_interval + 0.4, gaps
            assert rss[0] - rss_start < 150 and rss[1] - rss[0] < 50, (rss_start, rss)

    run(main(), timeout=120)
