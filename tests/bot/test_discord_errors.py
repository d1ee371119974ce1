"""Discord failing under the bot, injected by the fake Discord: expired interactions (10062, an
expired followup token), 429 with retry_after, 500s; and the bounded question queue ("busy")."""

from __future__ import annotations

import asyncio
import logging

import discord.webhook.async_

from bot import serving as serving_module
from tests.bot.helpers import GatedEmbedder, check_sent, started_bot
from tests.fake_discord import ROUTE_CALLBACK, ROUTE_FOLLOWUP, run

QUESTION = "What happened in Kunduz?"


def bot_records(caplog, level=logging.WARNING):
    return [r for r in caplog.records if r.levelno >= level]


async def quiet(rec, seconds=0.3):
    """Wait until the bot has sent nothing more for this interaction for `seconds`."""
    while True:
        n = len(rec.events)
        await asyncio.sleep(seconds)
        if len(rec.events) == n:
            return


async def ask_works(fake) -> None:
    rec = await fake.send_slash("ask", {"question": QUESTION}, member=fake.make_member())
    final = await rec.wait_final(timeout=10)
    assert rec.deferred and len(final.embeds) == 5
    check_sent(rec)


def test_expired_interactions_are_one_warning_no_retry_no_reply(fake_index, fake_embedder, caplog):
    """10062 on the defer (acknowledged too late / over 15 minutes old), 10062 and 50027 (expired
    webhook token) on the answer, 10062 on a button click: one warning each, no traceback, no
    retry, nothing sent to the user, and the bot keeps answering."""

    async def main():
        async with started_bot(fake_index, fake_embedder) as (bot, fake):
            caplog.set_level(logging.DEBUG, logger="bot")
            cases = []
            # 1. the defer itself gets 10062 Unknown interaction
            fake.unknown_interaction_next(ROUTE_CALLBACK)
            cases.append((await fake.send_slash("ask", {"question": QUESTION}, member=fake.make_member()), 1))
            # 2. deferred fine, the answer's token is gone (10062)
            fake.unknown_interaction_next(ROUTE_FOLLOWUP)
            cases.append((await fake.send_slash("ask", {"question": QUESTION}, member=fake.make_member()), 2))
            # 3. deferred fine, the followup token expired after 15 minutes (401, code 50027)
            fake.fail_next(ROUTE_FOLLOWUP, 401, {"code": 50027, "message": "Invalid Webhook Token"})
            cases.append((await fake.send_slash("ask", {"question": QUESTION}, member=fake.make_member()), 2))
            for rec, _ in cases:
                await rec.wait_for(lambda r: r.events, timeout=5)
                await quiet(rec)
            # 4. a "More" click on an answer whose interaction Discord no longer knows
            owner = fake.make_member()
            answered = await fake.send_slash("ask", {"question": QUESTION, "results": 2}, member=owner)
            first = await answered.wait_final(timeout=10)
            more_id = first.data["components"][1]["components"][1]["custom_id"]
            fake.unknown_interaction_next(ROUTE_CALLBACK)
            click = await fake.click(answered, more_id, member=owner)
            await click.wait_for(lambda r: r.events, timeout=5)
            await quiet(click)
            cases.append((click, 1))

            for rec, requests in cases:
                # no retry storm: exactly the failing request(s), nothing after them
                assert len(rec.events) == requests, rec
                assert not rec.ok_events or rec.ok_events[0].kind == "callback"
                assert not [e for e in rec.ok_events if e.is_content], rec  # nothing shown to the user
            warnings = [r for r in bot_records(caplog) if r.name.startswith("bot")]
            assert len(warnings) == 4, [r.getMessage() for r in warnings]
            assert all(r.levelno == logging.WARNING and r.exc_info is None for r in warnings)
            assert all("could not answer interaction" in r.getMessage() for r in warnings)
            assert "code 50027" in warnings[2].getMessage()
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
            await ask_works(fake)

    run(main())


def test_rate_limited_answer_is_delivered_after_retry_after(fake_index, fake_embedder):
    async def main():
        async with started_bot(fake_index, fake_embedder) as (bot, fake):
            fake.rate_limit_next(ROUTE_FOLLOWUP, retry_after=0.5)
            rec = await fake.send_slash("ask", {"question": QUESTION})
            final = await rec.wait_final(timeout=10)
            followups = [e for e in rec.events if e.kind == "followup"]
            assert [e.status for e in followups] == [429, 200]  # one retry, no storm
            assert followups[1].time - followups[0].time >= 0.45  # it waited retry_after
            assert len(final.embeds) == 5
            check_sent(rec)
            await ask_works(fake)

    run(main())


def test_one_server_error_is_retried_once(fake_index, fake_embedder):
    async def main():
        async with started_bot(fake_index, fake_embedder) as (bot, fake):
            fake.fail_next(ROUTE_FOLLOWUP, 500)
            rec = await fake.send_slash("ask", {"question": QUESTION})
            final = await rec.wait_final(timeout=10)
            followups = [e for e in rec.events if e.kind == "followup"]
            assert [e.status for e in followups] == [500, 200]
            assert followups[1].time - followups[0].time >= 0.9  # discord.py's first back-off: 1 s
            assert len(final.embeds) == 5

    run(main())


class FastBackoff:
    """discord.py's webhook module's `asyncio`, with sleeps 50x shorter: its 5xx back-off
    (1, 3, 5, 7, 9 s = 25 s) takes 0.5 s here; the number of attempts is unchanged."""

    def __getattr__(self, name):
        return getattr(asyncio, name)

    @staticmethod
    async def sleep(delay, result=None):
        return await asyncio.sleep(delay / 50, result)


def test_persistent_server_errors_give_up_after_bounded_retries(fake_index, fake_embedder, caplog, monkeypatch):
    monkeypatch.setattr(discord.webhook.async_, "asyncio", FastBackoff())

    async def main():
        async with started_bot(fake_index, fake_embedder, heartbeat_interval_ms=300) as (bot, fake):
            caplog.set_level(logging.WARNING)
            outage = fake.fail_next(ROUTE_FOLLOWUP, 500, count=100)
            rec = await fake.send_slash("ask", {"question": QUESTION})
            await rec.wait_for(lambda r: len(r.events) >= 6, timeout=10)
            await quiet(rec, 0.5)
            # the defer, then discord.py's 5 attempts at the answer; no apology attempt on top
            assert [(e.kind, e.status) for e in rec.events] == [("callback", 200)] + [("followup", 500)] * 5
            assert outage.hits == 5
            gave_up = [r for r in caplog.records if r.name == "bot.app"]
            assert len(gave_up) == 1 and gave_up[0].levelno == logging.WARNING and gave_up[0].exc_info is None
            assert "Discord kept answering 500" in gave_up[0].getMessage()
            outage.remaining = 0  # Discord recovers: the bot is healthy and answers again
            await ask_works(fake)
            gaps = fake.heartbeat_gaps()
            assert gaps and max(gaps) <= fake.heartbeat_interval + 0.3, gaps

    run(main())


def test_bounded_queue_refuses_politely_beyond_the_limit(fake_index, fake_embedder):
    """queue_limit 5, questions held in the embedder: 5 are deferred and answered when the
    embedder moves again, the other 7 get the private "busy" reply at once (nobody waits)."""
    gated = GatedEmbedder(fake_embedder)
    assert serving_module.SEARCH_QUEUE_LIMIT >= 200  # the default takes the 200-question burst

    async def main():
        async with started_bot(fake_index, gated) as (bot, fake):
            bot.serving.queue_limit = 5
            try:
                recs = [
                    await fake.send_slash("ask", {"question": f"{QUESTION} {i}"}, member=fake.make_member())
                    for i in range(12)
                ]
                await asyncio.sleep(0.5)
                deferred = [r for r in recs if r.deferred]
                refused = [r for r in recs if r.callback_type == 4]
                assert len(deferred) == 5 and len(refused) == 7, recs
                assert bot.serving.queued == 5
                for r in refused:
                    assert r.response_delay < 1.0 and r.ephemeral
                    assert r.callback.content == serving_module.BUSY
                    assert len(r.events) == 1
                    check_sent(r)
                # "Find sources" shares the queue
                more = await fake.send_message_command("Find sources", "Kunduz", member=fake.make_member())
                ev = await more.wait_final()
                assert more.callback_type == 4 and ev.ephemeral and ev.content == serving_module.BUSY
            finally:
                gated.gate.set()
            finals = await asyncio.gather(*(r.wait_final(timeout=10) for r in deferred))
            assert all(len(f.embeds) == 5 for f in finals)
            assert bot.serving.queued == 0
            await ask_works(fake)  # places are given back

    run(main())


def test_busy_after_the_defer_is_private_too(fake_index, fake_embedder):
    """A Busy raised after the defer (e.g. by a future path that searches without holding a
    place first) still reaches the asker privately: the public "thinking…" is removed."""

    async def main():
        async with started_bot(fake_index, fake_embedder) as (bot, fake):

            async def busy(*args, **kwargs):
                raise serving_module.Busy()

            bot.serving.search = busy
            rec = await fake.send_slash("ask", {"question": QUESTION})
            ev = await rec.wait_final()
            assert ev.content == serving_module.BUSY and ev.ephemeral and rec.original is None
            assert [e.kind for e in rec.ok_events] == ["callback", "delete", "followup"]
            check_sent(rec)

    run(main())
