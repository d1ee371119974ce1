"""👍 / 👎 under answers: stored in the index file's feedback table through the real bot and the
fake Discord, and exported as an evaluation set."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from embeddings import feedback as feedback_module
from embeddings.feedback import export_feedback, export_feedback_from_postgres
from embeddings.search import DEFAULT_MODE
from tests.bot.helpers import both_stores, check_sent, index_rows, started_bot
from tests.fake_discord import run

QUESTION = "Which cities in the north did the Taliban take?"


def feedback(settings) -> list[dict]:
    rows = index_rows(settings, "SELECT user_id, question, mode, vote, results FROM feedback ORDER BY id")
    return [{"user_id": u, "question": q, "mode": m, "vote": v, "results": json.loads(r)} for u, q, m, v, r in rows]


def shown_text(description: str) -> str:
    """What Discord displays for a quoted passage (quote marker, bold and escapes removed)."""
    text = description.removeprefix(">>> ").replace("**", "")
    text = re.sub(r"<(https?://[^>\s]+)>", r"\1", text)
    return re.sub(r"\\([^0-9A-Za-z\s])", r"\1", text).replace("\u200b", "")


def vote_buttons(data: dict) -> dict[str, dict]:
    """The vote buttons of an answer message, by emoji."""
    buttons = [c for row in data["components"] for c in row["components"] if c["type"] == 2]
    return {b["emoji"]["name"]: b for b in buttons if (b.get("emoji") or {}).get("name") in ("👍", "👎")}


def uid(member: dict) -> str:
    return str(member["user"]["id"])


@both_stores("fake_index")
def test_votes_are_stored_as_shown_and_exported(fake_index, fake_embedder, tmp_path):
    async def main():
        async with started_bot(fake_index, fake_embedder) as (bot, fake):
            asker, fan, critic = fake.make_member(), fake.make_member(), fake.make_member()
            rec = await fake.send_slash("ask", {"question": QUESTION, "results": 3}, member=asker)
            first = await rec.wait_final(timeout=10)
            # three rows: Context, Previous/More, then the votes (Discord allows five rows of five)
            assert len(first.components) == 3 and all(len(r["components"]) <= 5 for r in first.components)
            votes = vote_buttons(first.data)
            assert set(votes) == {"👍", "👎"} and votes["👍"]["custom_id"] != votes["👎"]["custom_id"]
            assert not any(b["disabled"] for b in votes.values())
            up, down = votes["👍"]["custom_id"], votes["👎"]["custom_id"]

            # anyone who sees the answer may vote; the reply is private
            click = await fake.click(rec, up, member=fan)
            reply = await click.wait_final()
            assert click.ephemeral and reply.ephemeral and click.callback_type == 5
            assert reply.content == "Thanks — your vote (👍) was recorded."
            check_sent(click)
            [row] = feedback(fake_index)
            assert row["user_id"] == uid(fan) and row["question"] == QUESTION
            assert row["vote"] == 1 and row["mode"] == DEFAULT_MODE
            assert [s["text"] for s in row["results"]] == [shown_text(e["description"]) for e in first.embeds]
            positions = [int(re.match(r"paragraph (\d+) of", e["footer"]["text"])[1]) for e in first.embeds]
            assert [s["position"] for s in row["results"]] == positions

            # the same user again: a new row, and the reply says so
            again = await fake.click(rec, up, member=fan)
            assert (await again.wait_final()).content == "Thanks — your vote (👍) was updated."
            assert [r["vote"] for r in feedback(fake_index)] == [1, 1]

            # a vote stores the page the message shows now
            turned = await fake.click(rec, first.components[1]["components"][1]["custom_id"], member=asker)
            page2 = await turned.wait_final(timeout=10)
            assert "results 4–6" in page2.content
            assert set(vote_buttons(page2.data)) == {"👍", "👎"}  # still there after the edit
            thumbs_down = await fake.click(rec, down, member=critic)
            reply = await thumbs_down.wait_final()
            assert reply.ephemeral and reply.content == "Thanks — your vote (👎) was recorded."
            check_sent(thumbs_down)
            rows = feedback(fake_index)
            assert [(r["user_id"], r["vote"]) for r in rows] == [(uid(fan), 1), (uid(fan), 1), (uid(critic), -1)]
            assert [s["text"] for s in rows[-1]["results"]] == [shown_text(e["description"]) for e in page2.embeds]
            return rows

    rows = run(main())
    out = tmp_path / "eval"
    if fake_index.index_url:
        counts = export_feedback_from_postgres(fake_index.index_url, out)
        assert not fake_index.index_path.exists()  # votes went to the database, never to a file
    else:
        counts = export_feedback(fake_index.index_path, out)
    assert counts["votes"] == 3 and counts["questions"] == 1 and counts["with_relevant"] == 1
    assert counts["stale_judgments"] == 0
    qrels = (out / "qrels.tsv").read_text().splitlines()
    assert qrels[0] == "query-id\tcorpus-id\tscore"
    judged = {tuple(line.split("\t")[1:]) for line in qrels[1:]}
    top = rows[0]["results"][0]
    assert (f"{top['path']}#{top['position']}", "1") in judged  # 👍: the top shown passage is relevant
    for shown in rows[-1]["results"]:  # 👎 on page 2: each of its passages judged not relevant
        assert (f"{shown['path']}#{shown['position']}", "0") in judged
    assert len(judged) == 1 + len(rows[-1]["results"])
    assert QUESTION in (out / "queries.jsonl").read_text()


def test_vote_on_find_sources_answer(fake_index, fake_embedder):
    async def main():
        async with started_bot(fake_index, fake_embedder) as (bot, fake):
            member = fake.make_member()
            claim = "The Taliban captured Kunduz city in the north"
            rec = await fake.send_message_command("Find sources", claim, member=member)
            final = await rec.wait_final(timeout=10)
            assert rec.ephemeral
            click = await fake.click(rec, vote_buttons(final.data)["👎"]["custom_id"], member=member)
            reply = await click.wait_final()
            assert reply.ephemeral and reply.content == "Thanks — your vote (👎) was recorded."
            [row] = feedback(fake_index)
            assert row["user_id"] == uid(member) and row["question"] == claim and row["vote"] == -1
            assert len(row["results"]) == len(final.embeds) > 0

    run(main())


def test_vote_errors_are_private_and_the_view_survives(fake_index, fake_embedder, monkeypatch):
    async def main():
        async with started_bot(fake_index, fake_embedder) as (bot, fake):
            rec = await fake.send_slash("ask", {"question": QUESTION})
            final = await rec.wait_final(timeout=10)
            up = vote_buttons(final.data)["👍"]["custom_id"]

            async def read_only(*args, **kwargs):
                raise sqlite3.OperationalError("attempt to write a readonly database")

            with monkeypatch.context() as m:
                m.setattr(feedback_module, "record_feedback", read_only)
                click = await fake.click(rec, up)
                reply = await click.wait_final()
            assert reply.ephemeral and reply.content == (
                "Your vote could not be recorded: the index file cannot be written right now; please try again later."
            )
            assert "readonly" not in reply.content
            check_sent(click)

            # the file gone (e.g. moved away): no empty database is created in its place
            moved = fake_index.index_path.with_name("moved.sqlite3")
            fake_index.index_path.rename(moved)
            click = await fake.click(rec, up)
            reply = await click.wait_final()
            assert (
                reply.ephemeral
                and reply.content == "Your vote could not be recorded: there is no index file right now."
            )
            assert not fake_index.index_path.exists()
            moved.rename(fake_index.index_path)

            # the buttons still work afterwards
            click = await fake.click(rec, up)
            assert (await click.wait_final()).content == "Thanks — your vote (👍) was recorded."
            assert len(feedback(fake_index)) == 1

    run(main())


@pytest.mark.parametrize("fake_index", ["postgres"], indirect=True)
def test_a_vote_the_database_cannot_take_is_a_private_apology(fake_index, fake_embedder, monkeypatch):
    """PostgreSQL away (a restart, the network): the voter is told privately, the details go to
    the log, and the next vote is stored once the database answers again. (The file's version:
    test_vote_errors_are_private_and_the_view_survives.)"""
    import psycopg

    import embeddings.feedback

    async def main():
        async with started_bot(fake_index, fake_embedder) as (bot, fake):
            rec = await fake.send_slash("ask", {"question": QUESTION})
            up = vote_buttons((await rec.wait_final(timeout=10)).data)["👍"]["custom_id"]

            def away(*args, **kwargs):
                raise psycopg.OperationalError("server closed the connection unexpectedly")

            with monkeypatch.context() as m:
                m.setattr(embeddings.feedback, "record_feedback_in_postgres", away)
                click = await fake.click(rec, up)
                reply = await click.wait_final()
            assert reply.ephemeral and reply.content == (
                "Your vote could not be recorded: the index database cannot be written right now; "
                "please try again later."
            )
            click = await fake.click(rec, up)
            assert (await click.wait_final()).content == "Thanks — your vote (👍) was recorded."
            assert len(feedback(fake_index)) == 1

    run(main())
