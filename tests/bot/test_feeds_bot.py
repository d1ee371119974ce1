"""/feeds add|list|remove and the scheduled refresh, through the fake Discord, against feeds on a
local HTTP server (127.0.0.1, FEEDS_ALLOW_PRIVATE_HOSTS): nothing leaves the machine. The refresh
period is set on Settings directly (REFRESH_EVERY itself is at least 5 minutes)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import replace
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

import pytest

from embeddings.feeds import add_feed, fetch_feeds, list_feeds
from tests.bot.helpers import LIVE_MARKUP, check_message, check_sent, started_bot, texts_of
from tests.bot.processes import GatedIndexEmbedder
from tests.fake_discord import MANAGE_GUILD, run

XML = {"Content-Type": "application/rss+xml; charset=utf-8"}
HTML = {"Content-Type": "text/html; charset=utf-8"}
HOSTILE = "@everyone **Breaking** [click here](https://evil.example/x) <@&123456789012345678> ```"
ZEBRA = "Who painted the zebra crossing in Kunduz?"
ZEBRA_TEXT = (
    "A zebra crossing painted overnight in Kunduz surprised residents, who said nobody had asked for it "
    "and nobody knew who paid for the zebra paint. The town council said it would keep the zebra crossing."
)


def rss(title: str, items: list[tuple[str, str]]) -> bytes:
    """An RSS 2.0 feed of (title, link) items, without summaries (an article's text is its page's)."""
    body = "".join(
        f"<item><title>{xml_escape(t)}</title><link>{xml_escape(link)}</link><guid>{xml_escape(link)}</guid>"
        "<pubDate>Mon, 07 Dec 2026 08:00:00 GMT</pubDate></item>"
        for t, link in items
    )
    return (
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
        f"<title>{xml_escape(title)}</title><link>http://127.0.0.1/</link><description>d</description>{body}"
        "</channel></rss>"
    ).encode()


def page(title: str, text: str) -> bytes:
    return (
        f"<html><head><title>{title}</title></head><body><article><h1>{title}</h1><p>{text}</p>"
        f"<p>{text}</p></article></body></html>"
    ).encode()


@pytest.fixture
def settings(fake_index):
    return replace(
        fake_index, feeds_allow_private_hosts=True, feeds_host_interval_seconds=0.0, feeds_timeout_seconds=2.0
    )


def feeds_command(sub: str, focused: str | None = None, **options) -> list[dict]:
    """The options of /feeds <sub> as Discord sends them (a subcommand holding its options)."""
    inner = [
        {"name": k, "type": 3, "value": v} | ({"focused": True} if k == focused else {}) for k, v in options.items()
    ]
    return [{"name": sub, "type": 1, "options": inner}]


def live_markup(data: dict) -> list[str]:
    return [t for t in texts_of(data) if LIVE_MARKUP.search(t)]


def test_admins_add_list_and_remove_feeds_and_others_are_refused(server, settings, fake_embedder):
    server.routes["/feed.xml"] = (200, XML, rss(HOSTILE, [("One", server.url("/one"))]))
    server.routes["/page.html"] = (200, HTML, page("Not a feed", "Just a page."))
    admin = lambda fake: fake.make_member(permissions=MANAGE_GUILD)  # noqa: E731

    async def slash(fake, sub, member, **options):
        rec = await fake.send_slash("feeds", feeds_command(sub, **options), member=member)
        ev = await rec.wait_final(timeout=10)
        check_sent(rec)
        assert ev.ephemeral and not live_markup(ev.data), ev.data
        return ev

    async def main():
        async with started_bot(settings, fake_embedder) as (bot, fake):
            assert int(fake.command("feeds")["default_member_permissions"]) == MANAGE_GUILD  # the hint...
            member = fake.make_member(permissions=0)
            for sub, options in (("add", {"url": server.url("/feed.xml")}), ("list", {}), ("remove", {"name": "x"})):
                ev = await slash(fake, sub, member, **options)  # ...and the check that counts
                assert ev.content.startswith("You need the Manage Server permission")
            assert list_feeds(settings) == [] and server.paths() == []

            ev = await slash(fake, "add", admin(fake), url=server.url("/feed.xml"), name="news")
            assert ev.content.startswith("Added feed **news** · @\u200beveryone \\*\\*Breaking\\*\\*")
            assert "corpus-bot feeds fetch" in ev.content  # no scheduled refresh in these settings
            assert [f.name for f, _ in list_feeds(settings)] == ["news"]

            # each refusal is one private line, and adds nothing
            again = await slash(fake, "add", admin(fake), url=server.url("/feed.xml"), name="other")
            not_feed = await slash(fake, "add", admin(fake), url=server.url("/page.html"))
            bad_name = await slash(fake, "add", admin(fake), url=server.url("/feed.xml"), name="No Spaces")
            for ev, why in (
                (again, "is already added as feed 'news'"),
                (not_feed, "/page.html"),
                (bad_name, "is not usable"),
            ):
                assert why in ev.content and "\n" not in ev.content and not ev.embeds, ev.content
            assert [f.name for f, _ in list_feeds(settings)] == ["news"]

            ev = await slash(fake, "list", admin(fake))
            (embed,) = ev.embeds
            assert embed["title"] == "News feeds (1)"
            assert embed["description"].startswith("**news** · @\u200beveryone \\*\\*Breaking\\*\\* \\[click here\\]")
            assert f"<{server.url('/feed.xml')}> · 0 articles" in embed["description"]

            offered = await fake.autocomplete(
                "feeds", feeds_command("remove", "name", name="ne"), "name", member=admin(fake)
            )
            await offered.wait_response()
            assert offered.choices == [{"name": "news", "value": "news"}]
            hidden = await fake.autocomplete("feeds", feeds_command("remove", "name", name="ne"), "name", member=member)
            await hidden.wait_response()
            assert hidden.choices == []  # feed names are for admins

            ev = await slash(fake, "remove", admin(fake), name="news")
            assert ev.content.startswith("Removed feed **news**") and "feeds/news/" in ev.content
            assert list_feeds(settings) == []
            gone = await slash(fake, "remove", admin(fake), name="news")
            assert gone.content.startswith("No feed named 'news'") and "\n" not in gone.content
            ev = await slash(fake, "list", admin(fake))
            assert ev.embeds[0]["description"] == "No feeds yet: add one with /feeds add."

    run(main(), timeout=60)


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def answers_zebra(fake) -> bool:
    rec = await fake.send_slash("ask", {"question": ZEBRA}, member=fake.make_member())
    final = await rec.wait_final(timeout=10)
    check_sent(rec)
    return any("zebra" in (e.get("description") or "") for e in final.embeds)


def test_a_scheduled_refresh_writes_indexes_and_reports_new_articles_once(server, settings, fake_embedder):
    server.routes["/feed.xml"] = (200, XML, rss("Kunduz Daily", [("Zebra crossing", server.url("/zebra"))]))
    server.routes["/zebra"] = (200, HTML, page("Zebra crossing appears overnight", ZEBRA_TEXT))
    add_feed(settings, server.url("/feed.xml"), "kunduz")
    settings = replace(settings, refresh_every=0.3)

    async def main():
        async with started_bot(settings, fake_embedder, admin_channel=True) as (bot, fake):
            assert not await answers_zebra(fake)
            cog = bot.get_cog("Feeds")
            await wait_until(lambda: fake.channel_messages, 60, "the refresh summary")
            assert await answers_zebra(fake)  # served from the index the round built

            (posted,) = fake.channel_messages
            check_message(posted.data)  # allowed_mentions: nobody
            assert int(posted.path.split("/")[2]) == fake.channel_id
            (embed,) = posted.data["embeds"]
            assert embed["title"] == "Scheduled refresh" and embed["color"] == 0x2ECC71  # green: nothing failed
            lines = embed["description"].split("\n")
            assert lines[0].startswith(
                "1 feed fetched (0 unchanged): 1 new article written (0 from the feed's own text)"
            )
            assert lines[1].startswith("Index updated: 1 added, 0 changed, 0 removed")
            assert bot.serving.job.started_by == "scheduled refresh"

            # later rounds find nothing new: nothing is posted, nothing re-indexed
            rounds = cog.rounds
            await wait_until(lambda: cog.rounds >= rounds + 3, 30, "three more rounds")
            assert len(fake.channel_messages) == 1
            assert server.paths().count("/zebra") == 1

    run(main(), timeout=120)


def test_failing_feeds_are_reported_inert_and_the_next_round_still_runs(server, settings, fake_embedder):
    hostile_link = server.url("/gone?a=**bold**&b=[click](x)&c=@everyone")
    server.routes["/feed.xml"] = (200, XML, rss("Fine", [("Gone", hostile_link)]))
    add_feed(settings, server.url("/feed.xml"), "news")
    server.routes["/later.xml"] = (200, XML, rss("Later", []))
    add_feed(settings, server.url("/later.xml"), "broken")
    server.routes["/later.xml"] = (500, {}, b"oops")
    settings = replace(settings, refresh_every=0.3)

    async def main():
        async with started_bot(settings, fake_embedder, admin_channel=True) as (bot, fake):
            cog = bot.get_cog("Feeds")
            await wait_until(lambda: len(fake.channel_messages) >= 2, 30, "two summaries")
            first = fake.channel_messages[0]
            check_message(first.data)
            assert not live_markup(first.data), first.data
            (embed,) = first.data["embeds"]
            assert embed["color"] == 0xE74C3C  # red: something failed
            lines = embed["description"].split("\n")
            assert lines[0].startswith("2 feeds fetched (0 unchanged): 0 new articles written")
            assert lines[1].startswith("- broken: <http://127.0.0.1:") and "HTTP 500 Internal Server Error" in lines[1]
            assert lines[2].startswith("- news: <http://127.0.0.1:") and "\\*\\*bold\\*\\*" in lines[2]
            assert "the feed gives no text for it" in lines[2]
            assert len(lines) == 3  # no index line: nothing was written
            assert bot.serving.job is None and cog.rounds >= 1

    run(main(), timeout=60)


def test_an_inaccessible_admin_channel_is_one_warning_and_the_round_completes(server, settings, fake_embedder, caplog):
    server.routes["/broken.xml"] = (200, XML, rss("Later", []))
    add_feed(settings, server.url("/broken.xml"), "broken")
    server.routes["/broken.xml"] = (500, {}, b"oops")
    settings = replace(settings, refresh_every=0.3, admin_channel_id=424242424242424242)

    async def main():
        async with started_bot(settings, fake_embedder) as (bot, fake):
            cog = bot.get_cog("Feeds")
            await wait_until(lambda: cog.rounds >= 2, 30, "two rounds")
            assert fake.channel_messages == []

    with caplog.at_level(logging.WARNING, logger="bot.cogs.feeds"):
        run(main(), timeout=60)
    warnings = [r for r in caplog.records if r.name == "bot.cogs.feeds" and "ADMIN_CHANNEL_ID" in r.getMessage()]
    assert warnings and all(r.exc_info is None and "\n" not in r.getMessage() for r in warnings)
    assert "424242424242424242" in warnings[0].getMessage()


def test_a_round_during_a_reindex_leaves_its_articles_to_the_next_round(server, settings, fake_embedder, tmp_path):
    gate = tmp_path / "gate"
    server.routes["/feed.xml"] = (200, XML, rss("Kunduz Daily", [("Zebra crossing", server.url("/zebra"))]))
    server.routes["/zebra"] = (200, HTML, page("Zebra crossing appears overnight", ZEBRA_TEXT))
    changed = sorted(settings.corpus_dir.iterdir())[1]
    changed.write_text(changed.read_text() + "\n\nA late correction about the harbour.\n")  # work for /reindex
    settings = replace(settings, refresh_every=0.3)

    async def main():
        factory = functools.partial(GatedIndexEmbedder, str(gate))
        async with started_bot(settings, fake_embedder, index_embedder_factory=factory, admin_channel=True) as (
            bot,
            fake,
        ):
            held = await fake.send_slash("reindex", member=fake.make_member(permissions=MANAGE_GUILD))
            await held.wait_response()
            await wait_until(lambda: Path(f"{gate}.entered").exists(), 30, "the /reindex to embed")
            await asyncio.to_thread(add_feed, settings, server.url("/feed.xml"), "kunduz")
            await wait_until(lambda: fake.channel_messages, 30, "the first summary")
            (embed,) = fake.channel_messages[0].data["embeds"]
            lines = embed["description"].split("\n")
            assert lines[0].startswith("1 feed fetched (0 unchanged): 1 new article written")
            assert lines[1].startswith("Index not updated: a re-index started by ") and "is running" in lines[1]
            assert bot.serving.job.started_by != "scheduled refresh"  # never a second job

            gate.touch()
            await wait_until(lambda: len(fake.channel_messages) >= 2, 30, "the second summary")
            (embed,) = fake.channel_messages[1].data["embeds"]
            lines = embed["description"].split("\n")
            assert lines[0].startswith("1 feed fetched (0 unchanged): 0 new articles written")
            assert lines[1].startswith("Index updated: ")
            assert bot.serving.job.started_by == "scheduled refresh"
            assert await answers_zebra(fake)
            for posted in fake.channel_messages:
                check_message(posted.data)

    run(main(), timeout=120)


def test_the_summary_and_the_feed_list_stay_within_discords_limits_however_many_lines():
    import discord

    from bot import render

    failures = [f"feed-{i}: http://127.0.0.1/{i} {HOSTILE}: HTTP 500 Internal Server Error" for i in range(500)]
    embed = render.refresh_embed("3 feeds fetched", "Index updated: 1 added", failures, failed=True)
    payload = {"embeds": [embed.to_dict()], "allowed_mentions": discord.AllowedMentions.none().to_dict()}
    check_message(payload)
    assert not live_markup(payload)
    assert embed.description.endswith(" more") and "- feed-0: <http://127.0.0.1/0> @\u200beveryone" in embed.description

    rows = [(f"feed-{i}", HOSTILE * 3, f"http://127.0.0.1/{i}/feed.xml", i) for i in range(500)]
    embed = render.feeds_embed(rows)
    payload["embeds"] = [embed.to_dict()]
    check_message(payload)
    assert not live_markup(payload)
    assert embed.title == "News feeds (500)" and embed.description.endswith(" more")
    assert [render.period(s) for s in (300, 1800, 7200, 86400, 5400, 0.3)] == ["5m", "30m", "2h", "1d", "90m", "0.3s"]
    added = render.feed_added("news", HOSTILE, "http://127.0.0.1/feed.xml", 7200)
    assert "next scheduled refresh (every 2h)" in added and "@\u200beveryone" in added


def test_an_unexpected_error_in_a_round_is_logged_and_reported_and_the_next_rounds_run(
    settings, fake_embedder, monkeypatch, caplog
):
    import embeddings.feeds

    calls = []

    def fetch_once_broken(settings):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return fetch_feeds(settings)

    # The bot loads its cogs anew (load_extension executes the module): patch where the cog imports from.
    monkeypatch.setattr(embeddings.feeds, "fetch_feeds", fetch_once_broken)
    settings = replace(settings, refresh_every=0.2)

    async def main():
        async with started_bot(settings, fake_embedder, admin_channel=True) as (bot, fake):
            cog = bot.get_cog("Feeds")
            await wait_until(lambda: cog.rounds >= 3, 30, "three rounds")
            assert len(calls) >= 3
            (posted,) = fake.channel_messages  # the broken round; the next ones had nothing to say
            (embed,) = posted.data["embeds"]
            assert embed["description"] == (
                "- the feeds could not be fetched: an unexpected error (details are in the bot's log)"
            )

    with caplog.at_level(logging.ERROR, logger="bot.cogs.feeds"):
        run(main(), timeout=60)
    (logged,) = [r for r in caplog.records if r.name == "bot.cogs.feeds" and r.levelno == logging.ERROR]
    assert "RuntimeError: boom" in caplog.text and logged.exc_info is not None


@pytest.mark.parametrize("shard_ids, refreshes", [(None, True), ((0, 1), True), ((1,), False)])
def test_only_the_process_running_shard_0_refreshes(settings, shard_ids, refreshes):
    from types import SimpleNamespace

    from bot.cogs.feeds import Feeds

    async def main():
        cog = Feeds(
            SimpleNamespace(settings=replace(settings, refresh_every=300.0, shard_count=2, shard_ids=shard_ids))
        )
        await cog.cog_load()
        try:
            return cog.refresher is not None
        finally:
            await cog.cog_unload()

    assert run(main()) is refreshes
