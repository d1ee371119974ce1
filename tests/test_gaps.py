"""Coverage gaps: weak questions asked in Discord are kept in the index (both stores), without the
asker unless RECORD_ASKERS=1, for GAPS_KEEP_DAYS days; `corpus-bot gaps` lists them grouped,
most asked first. (Through the bot: tests/bot/test_gaps.py.)"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from dataclasses import replace

import pytest
from click.testing import CliRunner

from bot.cli import cli
from embeddings import gaps as gaps_module
from embeddings.gaps import (
    WeakQuestion,
    group_weak_questions,
    note_weak_question,
    read_weak_questions,
    record_weak_question,
)
from tests.bot.helpers import STORES, in_store, index_rows

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
GUILD, OTHER_GUILD, USER = 111111111111111111, 222222222222222222, 333333333333333333
GAP_KEYS = {"question", "count", "first_asked", "last_asked", "servers", "wordings"}


@pytest.fixture(params=STORES)
def indexed(request, fake_settings, fake_embedder):
    """The shipped corpus indexed with the fake embedder in the SQLite file or in PostgreSQL."""
    return in_store(request, fake_settings, fake_embedder)


def kept(settings) -> list[tuple]:
    return index_rows(settings, "SELECT asked, guild_id, user_id, question FROM weak_questions ORDER BY id")


def at(days_ago: float, hours: float = 0) -> dt.datetime:
    return NOW - dt.timedelta(days=days_ago, hours=hours)


def test_a_weak_question_is_kept_with_time_and_server_but_no_asker_unless_record_askers(indexed):
    record_weak_question(indexed, "Who paid for the zebra crossing?", guild_id=GUILD, user_id=USER, now=NOW)
    record_weak_question(indexed, "asked in a DM", guild_id=None, user_id=USER, now=NOW)
    assert kept(indexed) == [
        ("2026-12-01T12:00:00+00:00", str(GUILD), None, "Who paid for the zebra crossing?"),
        ("2026-12-01T12:00:00+00:00", None, None, "asked in a DM"),
    ]
    record_weak_question(replace(indexed, record_askers=True), "with the asker", guild_id=GUILD, user_id=USER, now=NOW)
    assert kept(indexed)[-1] == ("2026-12-01T12:00:00+00:00", str(GUILD), str(USER), "with the asker")


def test_records_older_than_gaps_keep_days_are_deleted_when_one_is_recorded_and_never_listed(indexed):
    week = replace(indexed, gaps_keep_days=7)
    record_weak_question(week, "eight days ago", guild_id=GUILD, user_id=None, now=at(8))
    record_weak_question(week, "six days ago", guild_id=GUILD, user_id=None, now=at(6))
    # a record past the window is not listed, even before the next recording deletes it
    listed, _ = read_weak_questions(week, now=NOW)
    assert [q.question for q in listed] == ["six days ago"]
    record_weak_question(week, "today", guild_id=GUILD, user_id=None, now=NOW)
    assert [row[3] for row in kept(week)] == ["six days ago", "today"]
    # the default keeps 90 days
    record_weak_question(indexed, "91 days before", guild_id=GUILD, user_id=None, now=at(91))
    record_weak_question(indexed, "later", guild_id=GUILD, user_id=None, now=NOW)
    assert [row[3] for row in kept(indexed)] == ["six days ago", "today", "later"]


def test_a_failure_to_record_is_one_warning_never_an_error(fake_settings, caplog):
    """No index file (moved away, or not built yet): nothing is created in its place."""
    with caplog.at_level(logging.WARNING, logger="embeddings.gaps"):
        ok = asyncio.run(note_weak_question(fake_settings, "anything", guild_id=GUILD, user_id=USER))
    assert ok is False and not fake_settings.index_path.exists()
    [warning] = [r for r in caplog.records if r.name == "embeddings.gaps"]
    assert warning.levelno == logging.WARNING and "could not record a weak question" in warning.getMessage()


def asked(question: str, days_ago: float, guild: int | None = GUILD) -> WeakQuestion:
    return WeakQuestion(at(days_ago).isoformat(), None if guild is None else str(guild), question)


def test_equal_wordings_are_merged_and_counted_similar_ones_grouped_unrelated_kept_apart(fake_embedder, monkeypatch):
    records = [
        asked("Who paid for the zebra crossing?", 5),
        asked("who paid for the   zebra crossing", 3, OTHER_GUILD),
        asked("WHO PAID FOR THE ZEBRA CROSSING?!", 1),
        asked("Who paid for the zebra crossing in Kunduz?", 2),
        asked("How do I bake sourdough bread?", 4),
        asked("How do I bake sourdough bread?", 0.5, None),
        asked("Bitcoin price today", 6),
    ]
    gaps = group_weak_questions(records, fake_embedder.encode)
    assert [(g.question, g.count) for g in gaps] == [
        ("WHO PAID FOR THE ZEBRA CROSSING?!", 4),  # the latest of the equally asked spellings
        ("How do I bake sourdough bread?", 2),
        ("Bitcoin price today", 1),
    ]
    zebra, bread, bitcoin = gaps
    assert [(w.question, w.count) for w in zebra.wordings] == [
        ("WHO PAID FOR THE ZEBRA CROSSING?!", 3),
        ("Who paid for the zebra crossing in Kunduz?", 1),
    ]
    assert zebra.first_asked == at(5).isoformat() and zebra.last_asked == at(1).isoformat()
    assert zebra.servers == 2 and bread.servers == 1 and bitcoin.servers == 1  # a DM is no server
    assert bread.first_asked == at(4).isoformat() and bread.last_asked == at(0.5).isoformat()

    # beyond the most asked wordings, and without the question model, only equal wordings are merged
    monkeypatch.setattr(gaps_module, "MOST_GROUPED", 2)
    assert [g.count for g in group_weak_questions(records, fake_embedder.encode)] == [3, 2, 1, 1]
    alone = group_weak_questions(records)
    assert [(g.question, g.count) for g in alone] == [
        ("WHO PAID FOR THE ZEBRA CROSSING?!", 3),
        ("How do I bake sourdough bread?", 2),
        ("Who paid for the zebra crossing in Kunduz?", 1),  # equal counts: the latest asked first
        ("Bitcoin price today", 1),
    ]


def gaps_cli(settings, *args):
    env = {
        "INDEX_PATH": str(settings.index_path),
        "INDEX_URL": settings.index_url,
        "EMBEDDING_MODEL": settings.embedding_model,
    }
    return CliRunner().invoke(cli, ["gaps", *args], env=env, catch_exceptions=False)


def test_gaps_lists_groups_in_the_documented_json_shape_and_since_narrows_them(indexed):
    today = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for question, days_ago, guild in [
        ("Who paid for the zebra crossing?", 10, GUILD),
        ("who paid for the zebra crossing", 2, OTHER_GUILD),
        ("Who paid for the zebra crossing in Kunduz?", 1, GUILD),
        ("How do I bake sourdough bread?", 12, GUILD),
    ]:
        record_weak_question(indexed, question, guild_id=guild, user_id=USER, now=today - dt.timedelta(days=days_ago))

    result = gaps_cli(indexed, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {"groups", "grouped_by", "since", "keep_days"}
    assert data["grouped_by"] == "meaning" and data["since"] is None and data["keep_days"] == 90
    assert all(set(g) == GAP_KEYS for g in data["groups"])
    zebra, bread = data["groups"]
    assert (zebra["question"], zebra["count"], zebra["servers"]) == ("who paid for the zebra crossing", 3, 2)
    assert zebra["wordings"] == [
        {"question": "who paid for the zebra crossing", "count": 2},
        {"question": "Who paid for the zebra crossing in Kunduz?", "count": 1},
    ]
    assert dt.datetime.fromisoformat(zebra["first_asked"]) == today - dt.timedelta(days=10)
    assert dt.datetime.fromisoformat(zebra["last_asked"]) == today - dt.timedelta(days=1)
    assert (bread["question"], bread["count"], bread["servers"]) == ("How do I bake sourdough bread?", 1, 1)

    since = (today - dt.timedelta(days=5)).date().isoformat()
    narrowed = json.loads(gaps_cli(indexed, "--since", since, "--json").output)
    assert narrowed["since"] == since
    assert [(g["question"], g["count"]) for g in narrowed["groups"]] == [
        ("Who paid for the zebra crossing in Kunduz?", 2)  # two wordings once each: the latest leads
    ]

    text = gaps_cli(indexed).output
    assert text.startswith("Weak answers in the last 90 days: 4 questions in 2 groups (by meaning)")
    assert "   3×  who paid for the zebra crossing" in text and ", 2 servers" in text
    assert "also asked as: Who paid for the zebra crossing in Kunduz? (1×)" in text


def test_gaps_with_nothing_recorded_is_one_friendly_line_and_a_bad_since_one_clear_error(indexed):
    result = gaps_cli(indexed)
    assert result.exit_code == 0
    assert result.output == (
        "No weak answers recorded in the last 90 days: every question asked in Discord was answered well.\n"
    )
    assert json.loads(gaps_cli(indexed, "--json").output)["groups"] == []
    bad = gaps_cli(indexed, "--since", "last week")
    assert bad.exit_code == 1
    assert bad.output == "Error: --since 'last week' is not a date in YYYY-MM-DD form\n"


def test_question_text_cannot_drive_the_terminal(indexed):
    record_weak_question(indexed, "evil\x1b[2J\nfake line", guild_id=GUILD, user_id=None)
    output = gaps_cli(indexed).output
    assert "\x1b" not in output and "evil\\x1b[2J\\nfake line" in output
