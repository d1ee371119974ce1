"""Coverage gaps through the real bot and the fake Discord: a weak /ask is recorded (its text,
time and server, never its asker by default), and /gaps lists it to an admin, privately and
inert, and refuses everyone else."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from embeddings import gaps as gaps_module
from tests.bot.helpers import LIVE_MARKUP, both_stores, check_message, check_sent, index_rows, started_bot, texts_of
from tests.fake_discord import MANAGE_GUILD, run

# Words the corpus does not hold, wrapped in what Discord would render: pings, a heading, a
# masked link, bold, a code fence.
HOSTILE = "# @everyone <@123456789012345678> **sourdough** [starter](https://evil.example) ```recipe``` knead?"
AGAIN = HOSTILE.replace("knead?", "knead !!")  # the same question to gaps: merged
STRONG = "Which cities in the north did the Taliban take?"


def weak_rows(settings) -> list[tuple]:
    return index_rows(settings, "SELECT asked, guild_id, user_id, question FROM weak_questions ORDER BY id")


@both_stores("fake_index")
def test_a_weak_ask_is_recorded_and_gaps_lists_it_inert_to_admins_only(fake_index, fake_embedder):
    async def main():
        async with started_bot(fake_index, fake_embedder) as (bot, fake):
            asker = fake.make_member(permissions=0)
            weak = await fake.send_slash("ask", {"question": HOSTILE}, member=asker)
            answer = await weak.wait_final(timeout=10)
            assert "Nothing in the corpus answers this question well" in answer.content
            again = await fake.send_slash("ask", {"question": AGAIN}, member=asker)
            await again.wait_final(timeout=10)
            strong = await fake.send_slash("ask", {"question": STRONG}, member=asker)
            assert "answers this question well" not in (await strong.wait_final(timeout=10)).content

            rows = weak_rows(fake_index)
            assert [(r[1], r[2], r[3]) for r in rows] == [(str(fake.guild_id), None, HOSTILE)] + [
                (str(fake.guild_id), None, AGAIN)
            ]  # the server, never the asker (RECORD_ASKERS is off), and only the weak answers

            # a member without Manage Server is refused, privately; the command is hidden by default
            assert int(fake.command("gaps")["default_member_permissions"]) == MANAGE_GUILD
            refused = await fake.send_slash("gaps", member=fake.make_member(permissions=0))
            ev = await refused.wait_final()
            assert ev.ephemeral and ev.content.startswith("You need the Manage Server permission")
            assert HOSTILE not in (ev.content or "")

            listed = await fake.send_slash("gaps", member=fake.make_member(permissions=MANAGE_GUILD))
            shown = await listed.wait_final(timeout=10)
            check_sent(listed)  # no mention can ping anyone, within Discord's limits
            assert shown.ephemeral
            [embed] = shown.embeds
            assert embed["title"] == "Questions the corpus answered weakly"
            assert embed["description"].startswith("1. **2×** ")  # the two spellings merged and counted
            assert "knead !!" in embed["description"]  # the latest spelling shown
            assert "knead" in embed["description"] and "1 group" in embed["footer"]["text"]
            for text in texts_of(shown.data):
                assert not LIVE_MARKUP.search(text), text
            assert "@everyone" not in embed["description"] and "\\*\\*sourdough\\*\\*" in embed["description"]

            # a bad date is refused privately with the reason
            bad = await fake.send_slash(
                "gaps", {"since": "yesterday"}, member=fake.make_member(permissions=MANAGE_GUILD)
            )
            assert (await bad.wait_final()).content == "Since 'yesterday' is not a date in YYYY-MM-DD form."

    run(main())


def test_gaps_shows_a_server_its_own_questions_and_bot_admins_every_server(fake_index, fake_embedder):
    async def main():
        operator = 444444444444444444
        settings = replace(fake_index, admin_user_ids=frozenset({operator}), record_askers=True)
        async with started_bot(settings, fake_embedder) as (bot, fake):
            gaps_module.record_weak_question(bot.serving.settings, "asked elsewhere", guild_id=1, user_id=None)
            asker = fake.make_member()
            await (await fake.send_slash("ask", {"question": "sourdough starter knead"}, member=asker)).wait_final(10)
            assert weak_rows(settings)[-1][2] == asker["user"]["id"]  # RECORD_ASKERS=1 keeps it

            here = await fake.send_slash("gaps", member=fake.make_member(permissions=MANAGE_GUILD))
            description = (await here.wait_final(timeout=10)).embeds[0]["description"]
            assert "sourdough" in description and "asked elsewhere" not in description

            everywhere = await fake.send_slash("gaps", member=fake.make_member(operator, permissions=0))
            embed = (await everywhere.wait_final(timeout=10)).embeds[0]
            assert "sourdough" in embed["description"] and "asked elsewhere" in embed["description"]
            assert "1 server" in embed["description"] and "in any server" in embed["footer"]["text"]

    run(main())


def test_an_empty_list_is_one_friendly_line_and_find_sources_is_never_recorded(fake_index, fake_embedder):
    async def main():
        async with started_bot(fake_index, fake_embedder) as (bot, fake):
            # its text is someone else's chat message, written without asking the bot anything
            claim = await fake.send_message_command("Find sources", "sourdough starter knead")
            assert "answers this question well" in (await claim.wait_final(timeout=10)).content
            assert weak_rows(fake_index) == []
            rec = await fake.send_slash("gaps", member=fake.make_member(permissions=MANAGE_GUILD))
            embed = (await rec.wait_final(timeout=10)).embeds[0]
            assert embed["description"] == (
                "No weak answers recorded in this server in the last 90 days: "
                "every question asked with /ask was answered well."
            )

    run(main())


def test_a_failure_to_record_is_a_warning_and_the_asker_still_gets_the_answer(
    fake_index, fake_embedder, monkeypatch, caplog
):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(gaps_module, "record_weak_question", broken)

    async def main():
        async with started_bot(fake_index, fake_embedder) as (bot, fake):
            rec = await fake.send_slash("ask", {"question": "sourdough starter knead"})
            final = await rec.wait_final(timeout=10)
            assert "Nothing in the corpus answers this question well" in final.content
            assert not any(e.ephemeral for e in rec.events if e.is_content)  # no error reply followed
            check_sent(rec)

    with caplog.at_level(logging.WARNING, logger="embeddings.gaps"):
        run(main())
    warnings = [r for r in caplog.records if r.name == "embeddings.gaps"]
    assert len(warnings) == 1 and "disk full" in warnings[0].getMessage()
    assert weak_rows(fake_index) == []


def test_a_long_list_is_cut_to_one_message_saying_how_many_groups_are_left_out():
    from bot import render
    from embeddings.gaps import Gap, Wording

    when = "2026-12-01T12:00:00+00:00"
    gaps = [
        Gap(f"question {i} " + "<@123456789012345678> " * 20, 300 - i, when, when, 1, [Wording(f"q{i}", 1)] * 2)
        for i in range(300)
    ]
    embed = render.gaps_embed(gaps, questions=10_000, window="in the last 90 days", everywhere=True).to_dict()
    check_message({"embeds": [embed], "allowed_mentions": {"parse": []}})
    shown = embed["description"].count("×**")
    assert 0 < shown < 300
    assert embed["description"].endswith(f"… and {300 - shown} more groups: `corpus-bot gaps` lists them all")
    assert not LIVE_MARKUP.search(embed["description"])


@pytest.mark.parametrize("fake_index", ["postgres"], indirect=True)
def test_gaps_while_the_database_is_away_is_a_private_apology(fake_index, fake_embedder, monkeypatch):
    import psycopg

    def away(*args, **kwargs):
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(gaps_module, "read_weak_questions", away)

    async def main():
        async with started_bot(fake_index, fake_embedder) as (bot, fake):
            rec = await fake.send_slash("gaps", member=fake.make_member(permissions=MANAGE_GUILD))
            reply = await rec.wait_final(timeout=10)
            assert reply.ephemeral and reply.content.startswith("The index cannot be read right now")
            assert "server closed" not in reply.content

    run(main())
