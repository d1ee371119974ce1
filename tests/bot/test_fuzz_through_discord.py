"""Hostile corpus text and hostile questions, fuzzed with hypothesis THROUGH the fake Discord: for
each example a hostile corpus (mentions, markdown, links, headings, code fences, astral characters,
passages of any length up to ~60 KB) is indexed with the fake embedder and served by the running
bot; a hostile /ask, a "Find sources" on a hostile message, and a Context look-up are sent; every
payload the bot sends must fit Discord's limits, allow no mention, and show no corpus or user text
as a live mention, link, heading, subtext, quote or code block.

One bot (on an event loop in a thread) serves all the examples; hypothesis drives them from the
test's thread, each example swapping in its own index."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embeddings.config import Settings
from embeddings.index import run_index
from tests.bot.helpers import LIVE_MARKUP, check_sent, started_bot, texts_of
from tests.bot.test_hostile_and_sources import WideEmbedder
from tests.bot.test_render import HOSTILE

hostile = st.lists(
    st.one_of(st.sampled_from(HOSTILE), st.text(min_size=1, max_size=40), st.sampled_from([". ", "\n", "\n\n", "😀"])),
    min_size=1,
    max_size=40,
).map("".join)


@st.composite
def cases(draw):
    paragraphs = draw(st.lists(hostile.filter(str.strip), min_size=1, max_size=4))
    seed = draw(hostile.filter(str.strip))
    long_paragraph = (seed + " ") * (20_000 // len(seed) + 1)  # a very long passage in every corpus
    if draw(st.booleans()):
        long_paragraph *= 3  # ~60 KB
    articles = [
        {
            "title": draw(hostile),
            "source": draw(hostile),
            "authors": draw(st.lists(hostile, max_size=2)),
            "published": "2021-08-09",
            "url": draw(st.sampled_from(["https://example.com/a", "javascript:alert(1)", "<@1>"])),
            "text": "\n\n".join(["Kunduz plain seed paragraph with words."] + paragraphs),
        },
        {"title": draw(hostile), "source": None, "text": "Kunduz giant.\n\n" + long_paragraph},
    ]
    question = draw(hostile.filter(lambda q: q.strip() and len(q) <= 300))
    claim = draw(hostile.filter(str.strip))[:2000]
    return {
        "articles": articles,
        "question": question,
        "k": draw(st.integers(1, 10)),
        "private": draw(st.booleans()),
        "claim": claim,
    }


def outside_links(text: str) -> str:
    """Inside a <https://...> autolink nothing renders as markup or a mention."""
    return re.sub(r"<https?://[^>\s]+>", "<link>", text)


def check_inert(rec) -> None:
    check_sent(rec)  # limits, and allowed_mentions that ping nobody, on every payload
    for event in rec.events:
        if not event.is_content:
            continue
        for text in texts_of(event.data):
            visible = outside_links(text)
            assert not LIVE_MARKUP.search(visible), text
            assert "@everyone" not in visible and "@here" not in visible, text


def test_hostile_corpus_and_questions_through_discord(tmp_path):
    embedder = WideEmbedder()
    base = replace(
        Settings.from_env({}),
        embedding_model=WideEmbedder.name,
        ask_cooldown_seconds=0,
        index_path=tmp_path / "none.sqlite3",
        corpus_dir=tmp_path,
    )
    counter = itertools.count()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def make():
        return loop.create_future(), asyncio.Event()

    ready, stop = asyncio.run_coroutine_threadsafe(make(), loop).result(5)

    async def host():
        async with started_bot(base, embedder) as (bot, fake):  # starts without an index
            ready.set_result((bot, fake))
            await stop.wait()

    hosting = asyncio.run_coroutine_threadsafe(host(), loop)

    def on_loop(coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    async def get_ready():
        return await asyncio.wait_for(asyncio.shield(ready), 20)

    bot, fake = on_loop(get_ready())
    load = bot.serving._load

    async def drive(case, index_settings):
        bot.serving.settings = index_settings
        bot.serving.index = await bot.serving._run(load)  # this example's corpus, swapped in
        asker = fake.make_member()
        ask = await fake.send_slash(
            "ask", {"question": case["question"], "results": case["k"], "private": case["private"]}, member=asker
        )
        claim = await fake.send_message_command("Find sources", case["claim"], member=fake.make_member())
        final = await ask.wait_final(timeout=10, settle=0.03)
        await claim.wait_final(timeout=10, settle=0.03)
        recs = [ask, claim]
        if final.data.get("components"):
            select = final.data["components"][0]["components"][0]
            for option in select["options"][:2]:
                ctx = await fake.click(
                    ask, select["custom_id"], component_type=3, values=[option["value"]], member=asker
                )
                await ctx.wait_final(timeout=10, settle=0.03)
                recs.append(ctx)
        for rec in recs:
            check_inert(rec)
        return final

    seen = {"embeds": 0, "long": 0}

    @settings(
        max_examples=25,
        deadline=None,
        derandomize=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(cases())
    def example(case):
        n = next(counter)
        corpus = tmp_path / f"corpus{n}"
        corpus.mkdir()
        (corpus / "hostile.json").write_text(json.dumps(case["articles"]))
        index_settings = replace(base, corpus_dir=corpus, index_path=tmp_path / f"index{n}.sqlite3")
        run_index(index_settings, embedder=embedder)
        final = on_loop(drive(case, index_settings))
        seen["embeds"] += len(final.embeds)
        seen["long"] += sum(len(e.get("description", "")) > 3000 for e in final.embeds)

    try:
        example()
    finally:
        loop.call_soon_threadsafe(stop.set)
        hosting.result(15)

        async def cancel_leftovers():  # e.g. the answers' view timeouts
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        on_loop(cancel_leftovers())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    assert seen["embeds"] > 0 and seen["long"] > 0, seen  # the examples did reach long passages
