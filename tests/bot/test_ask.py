"""/ask, its buttons, source autocomplete and "Find sources", end to end: the real bot and the real
model against the fake Discord."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import replace

import pytest

from tests.bot.helpers import both_stores, check_message, check_sent, index_rows, started_bot
from tests.fake_discord import run

pytestmark = pytest.mark.model

QUESTION = "Which cities in the north did the Taliban take?"


def corpus_passages(settings) -> list[str]:
    return [t for (t,) in index_rows(settings, "SELECT text FROM passages")]


def shown_text(description: str) -> str:
    """What Discord displays for a quoted passage (quote marker, bold and escapes removed)."""
    text = description.removeprefix(">>> ").replace("**", "")
    text = re.sub(r"<(https?://[^>\s]+)>", r"\1", text)
    return re.sub(r"\\([^0-9A-Za-z\s])", r"\1", text).replace("\u200b", "")


@both_stores("shipped_store")
def test_ask_defers_then_quotes_passages_verbatim(shipped_store, real_embedder):
    passages = corpus_passages(shipped_store)

    async def main():
        async with started_bot(shipped_store, real_embedder) as (bot, fake):
            rec = await fake.send_slash("ask", {"question": QUESTION})
            final = await rec.wait_final(timeout=10)
            # deferred at once, the answer came after
            assert rec.events[0].kind == "callback" and rec.callback_type == 5
            assert rec.response_delay < 1.0
            assert final.time > rec.events[0].time and not rec.ephemeral
            check_sent(rec)
            data = final.data
            assert data["content"].startswith("**Q:** Which cities in the north did the Taliban take?")
            embeds = data["embeds"]
            assert len(embeds) == 5
            for n, e in enumerate(embeds, start=1):
                assert e["title"].startswith(f"{n}. ")
                assert e["author"]["name"]  # byline: publication · authors · date, or 'undated'
                assert re.fullmatch(r"paragraph \d+ of \d+ · relevance \d\.\d\d( \(weak match\))?", e["footer"]["text"])
                assert shown_text(e["description"]) in passages  # verbatim, whole passage
            assert any("**" in e["description"] for e in embeds)  # the best sentence is bold
            # (which passages rank best is the core's concern, tested there; here: how they are shown)
            assert any(e["author"]["name"].endswith("undated") for e in embeds)
            assert any(re.search(r"[A-Z][a-z]{2} \d{1,2}, \d{4}$", e["author"]["name"]) for e in embeds)
            # components: the Context menu (one option per result), Previous / More, and 👍 / 👎
            assert len(data["components"]) == 3
            select, buttons = data["components"][0]["components"], data["components"][1]["components"]
            assert select[0]["type"] == 3 and len(select[0]["options"]) == 5
            assert [b["label"] for b in buttons] == ["Previous", "More"]
            assert buttons[0]["disabled"] and not buttons[1]["disabled"]
            votes = data["components"][2]["components"]
            assert [b["emoji"]["name"] for b in votes] == ["👍", "👎"] and not any(b["disabled"] for b in votes)

    run(main())


def test_the_sentence_that_answers_is_bold(shipped_index, real_embedder):
    """Chosen by meaning, not by shared words: "US" is "U.S." and "send" is "ordered ... into the mix"."""

    async def main():
        async with started_bot(shipped_index, real_embedder) as (bot, fake):
            rec = await fake.send_slash("ask", {"question": "Did the US send B-52 bombers?"})
            final = await rec.wait_final(timeout=10)
            check_sent(rec)
            described = [e["description"] for e in final.data["embeds"] if "B-52" in e["description"]]
            assert described and "**The Biden Administration has ordered B-52 bombers into the mix" in described[0]
            assert described[0].count("**") == 2  # that sentence only

    run(main())


def test_more_pages_context_and_only_the_asker_turns_pages(shipped_index, real_embedder):
    async def main():
        async with started_bot(shipped_index, real_embedder) as (bot, fake):
            asker = fake.make_member()
            rec = await fake.send_slash("ask", {"question": QUESTION, "results": 3}, member=asker)
            first = await rec.wait_final(timeout=10)
            first_titles = [e["title"] for e in first.embeds]
            buttons = first.data["components"][1]["components"]
            more_id, previous_id = buttons[1]["custom_id"], buttons[0]["custom_id"]

            click = await fake.click(rec, more_id, member=asker)
            page2 = await click.wait_final(timeout=10)
            assert click.callback_type == 6  # deferred update: the search ran after the acknowledgement
            check_sent(click)
            assert [e["title"][:2] for e in page2.embeds] == ["4.", "5.", "6."]
            assert "results 4–6" in page2.content
            assert not page2.data["components"][1]["components"][0]["disabled"]  # Previous now enabled

            other = await fake.click(rec, more_id, member=fake.make_member())
            refused = await other.wait_final()
            assert refused.ephemeral and refused.content.startswith("Only the person who asked can turn these pages")

            back = await fake.click(rec, previous_id, member=asker)
            page1 = await back.wait_final(timeout=10)
            assert [e["title"] for e in page1.embeds] == first_titles

            select = page1.data["components"][0]["components"][0]
            target = select["options"][1]["value"]
            ctx = await fake.click(
                rec, select["custom_id"], component_type=3, values=[target], member=fake.make_member()
            )  # anyone may look at the context
            shown = await ctx.wait_final(timeout=10)
            assert ctx.ephemeral and ctx.callback_type == 5
            check_sent(ctx)
            assert 2 <= len(shown.embeds) <= 3
            chosen = [e for e in shown.embeds if "the quoted passage" in e["footer"]["text"]]
            assert len(chosen) == 1
            assert shown_text(chosen[0]["description"]) == shown_text(page1.embeds[1]["description"])

    run(main())


def relevance_of(embed: dict) -> float:
    return float(re.search(r"relevance (-?\d+\.\d\d)", embed["footer"]["text"]).group(1))


async def every_page(fake, rec, asker) -> list[dict]:
    """Click More until it is disabled; every embed shown, page after page."""
    page = await rec.wait_final(timeout=10)
    embeds = list(page.embeds)
    while not page.data["components"][1]["components"][1]["disabled"]:
        click = await fake.click(rec, page.data["components"][1]["components"][1]["custom_id"], member=asker)
        page = await click.wait_final(timeout=10)
        check_sent(click)
        embeds += page.embeds
    return embeds


def test_more_reaches_every_passage_in_the_order_of_the_relevance_shown(shipped_index, real_embedder):
    """More goes on past two passages per article, through every passage of the matching articles,
    each once, the relevance in the footers never rising; filtered to one article, a page holds as
    many of its passages as asked."""
    passages = corpus_passages(shipped_index)

    async def main():
        async with started_bot(shipped_index, real_embedder) as (bot, fake):
            asker = fake.make_member()
            rec = await fake.send_slash("ask", {"question": QUESTION, "results": 10}, member=asker)
            embeds = await every_page(fake, rec, asker)
            assert [e["title"].split(".")[0] for e in embeds] == [str(n) for n in range(1, len(passages) + 1)]
            assert sorted(shown_text(e["description"]) for e in embeds) == sorted(passages)
            assert all(relevance_of(a) >= relevance_of(b) for a, b in zip(embeds, embeds[1:]))

            rec = await fake.send_slash(
                "ask", {"question": "Which cities fell?", "source": "antiwar", "results": 3}, member=asker
            )
            first = await rec.wait_final(timeout=10)
            assert len(first.embeds) == 3
            embeds = await every_page(fake, rec, asker)
            assert [e["title"].split(". ", 1)[0] for e in embeds] == [str(n) for n in range(1, 10)]
            assert {e["title"].split(". ", 1)[1] for e in embeds} == {
                "Taliban Overruns Much of Northern Afghanistan in Weekend Offensive"
            }

    run(main())


def test_names_and_authors_are_answers_and_off_topic_names_stay_weak(shipped_index, real_embedder):
    """A passage quoting the person asked about is an answer whatever its cosine; an author's name
    finds the article; a name the corpus never mentions is still weak."""

    async def ask(fake, question):
        rec = await fake.send_slash("ask", {"question": question})
        final = await rec.wait_final(timeout=10)
        check_sent(rec)
        return final

    async def main():
        async with started_bot(shipped_index, real_embedder) as (bot, fake):
            salemi = await ask(fake, "Who is Ramish Salemi?")
            assert "answers this question well" not in salemi.content
            assert "Ramish Salemi, a political analyst" in shown_text(salemi.embeds[0]["description"])
            assert "weak match" not in salemi.embeds[0]["footer"]["text"]
            ditz = await ask(fake, "What did Jason Ditz write?")
            assert ditz.embeds[0]["author"]["name"] == "Antiwar.com · By Jason Ditz · undated"
            assert "answers this question well" not in ditz.content
            merkel = await ask(fake, "Who is Angela Merkel?")
            assert "Nothing in the corpus answers this question well" in merkel.content

    run(main())


def test_private_answer_and_weak_answer(shipped_index, real_embedder):
    async def main():
        async with started_bot(shipped_index, real_embedder) as (bot, fake):
            rec = await fake.send_slash("ask", {"question": "What is a good recipe for banana bread?", "private": True})
            final = await rec.wait_final(timeout=10)
            assert rec.ephemeral and final.message["flags"] & 64
            assert "Nothing in the corpus answers this question well" in final.content
            assert all("weak match" in e["footer"]["text"] for e in final.embeds)

    run(main())


def test_filters_autocomplete_and_refusals(shipped_index, real_embedder):
    async def main():
        async with started_bot(shipped_index, real_embedder) as (bot, fake):
            ac = await fake.autocomplete("ask", {"question": "x", "source": "anti"}, focused="source")
            await ac.wait_response()
            assert [c["name"] for c in ac.choices] == ["Antiwar.com"]
            ac = await fake.autocomplete("ask", {"question": "x"}, focused="source")
            await ac.wait_response()
            names = bot.serving.source_names()
            assert 0 < len(ac.choices) == min(25, len(names))

            rec = await fake.send_slash("ask", {"question": QUESTION, "source": "Antiwar.com"})
            final = await rec.wait_final(timeout=10)
            assert final.embeds and all(e["author"]["name"].startswith("Antiwar.com") for e in final.embeds)
            assert "source: Antiwar.com" in final.content

            rec = await fake.send_slash("ask", {"question": QUESTION, "since": "2021-08-01"}, member=fake.make_member())
            final = await rec.wait_final(timeout=10)
            assert "undated articles left out by the date filter" in final.content
            assert all("undated" not in e["author"]["name"] for e in final.embeds)

            for options, expected in [
                ({"since": "9 Aug"}, "Since '9 Aug' is not a date in YYYY-MM-DD form."),
                ({"since": "2021-09-01", "until": "2021-01-01"}, "Since (2021-09-01) is after until (2021-01-01)."),
                ({"question": "   "}, "The question is empty."),
                (
                    {"question": "?! 🤔 ..."},
                    "The question has no words (only punctuation or symbols): ask it in words.",
                ),
            ]:
                rec = await fake.send_slash("ask", {"question": QUESTION, **options}, member=fake.make_member())
                ev = await rec.wait_final()
                # refused before any defer, so privately
                assert rec.callback_type == 4 and ev.ephemeral and ev.content == expected
                check_sent(rec)

    run(main())


def test_find_sources_message_command(shipped_index, real_embedder):
    async def main():
        async with started_bot(shipped_index, real_embedder) as (bot, fake):
            claim = "The Taliban captured Kunduz city in the north @everyone"
            rec = await fake.send_message_command("Find sources", claim)
            final = await rec.wait_final(timeout=10)
            assert rec.deferred and rec.ephemeral
            check_sent(rec)
            assert final.content.startswith("**Q:** The Taliban captured Kunduz city in the north @\u200beveryone")
            assert final.embeds and any("Kunduz" in e["description"] for e in final.embeds)

            empty = await fake.send_message_command("Find sources", "")
            ev = await empty.wait_final()
            assert ev.ephemeral and ev.content == "That message has no text to look up."

    run(main())


def test_cooldown_is_per_user_and_friendly(shipped_index, real_embedder):
    settings = replace(shipped_index, ask_cooldown_rate=1, ask_cooldown_seconds=60)

    async def main():
        async with started_bot(settings, real_embedder) as (bot, fake):
            member = fake.make_member()
            first = await fake.send_slash("ask", {"question": QUESTION}, member=member)
            await first.wait_final(timeout=10)
            second = await fake.send_slash("ask", {"question": QUESTION}, member=member)
            ev = await second.wait_final()
            assert ev.ephemeral and re.fullmatch(r"You're asking a lot at once: try again in \d+ s\.", ev.content)
            # the message command shares the /ask budget
            third = await fake.send_message_command("Find sources", "Kunduz", member=member)
            assert "try again in" in (await third.wait_final()).content
            other = await fake.send_slash("ask", {"question": QUESTION}, member=fake.make_member())
            assert (await other.wait_final(timeout=10)).embeds

    run(main())


def test_unexpected_error_is_logged_not_shown(shipped_index, real_embedder, caplog):
    async def main():
        async with started_bot(shipped_index, real_embedder) as (bot, fake):

            async def broken(*args, **kwargs):
                raise RuntimeError("internal detail /secret/path")

            bot.serving.search = broken
            with caplog.at_level(logging.ERROR, logger="bot.app"):
                rec = await fake.send_slash("ask", {"question": QUESTION})
                ev = await rec.wait_final()
            assert ev.content == "Something went wrong; the error was logged. Please try again later."
            # the public "thinking…" message was removed so the apology is private
            assert ev.ephemeral and rec.original is None
            assert [e.kind for e in rec.ok_events] == ["callback", "delete", "followup"]
            assert "internal detail" not in str(rec.events[-1].payload)
            assert "RuntimeError: internal detail /secret/path" in caplog.text and "Traceback" in caplog.text

    run(main())


def test_buttons_expire_visibly(shipped_index, real_embedder):
    async def main():
        async with started_bot(shipped_index, real_embedder, view_timeout=0.5) as (bot, fake):
            rec = await fake.send_slash("ask", {"question": QUESTION})
            await rec.wait_final(timeout=10)
            edited = await rec.wait_for(lambda r: [e for e in r.ok_events if e.kind == "edit"], timeout=5)
            message = edited[-1].message
            assert all(c["disabled"] for row in message["components"] for c in row["components"])
            assert "These buttons have expired" in message["content"]
            check_message(edited[-1].data)

    run(main())


def test_fifty_concurrent_questions(shipped_index, real_embedder):
    """All deferred promptly, all answered, and the gateway heartbeat never late."""

    async def main():
        async with started_bot(shipped_index, real_embedder, heartbeat_interval_ms=500) as (bot, fake):
            questions = [f"{QUESTION} ({i})" if i % 2 else f"What happened in Kunduz? #{i}" for i in range(50)]
            started = time.monotonic()
            recs = [await fake.send_slash("ask", {"question": q}, member=fake.make_member()) for q in questions]
            finals = await asyncio.gather(*(r.wait_final(timeout=30, settle=0.05) for r in recs))
            elapsed = time.monotonic() - started
            assert all(r.deferred and r.response_delay < 1.0 for r in recs), [r.response_delay for r in recs]
            assert all(len(f.embeds) == 5 for f in finals)
            for r in recs:
                check_sent(r)
            gaps = fake.heartbeat_gaps()
            assert len(gaps) >= 1 and max(gaps) <= fake.heartbeat_interval + 0.4, gaps
            assert elapsed < 30

    run(main(), timeout=60)
