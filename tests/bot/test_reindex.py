"""/reindex end to end (fake embedder, writable corpus copy): who may run it, one run at a time,
progress edits, /ask served from the old index during the run and from the new one after it; the
run's process dying without taking the bot along; the confirmation a run removing most articles needs."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

from embeddings.index import index_lock, run_index
from tests.bot.helpers import both_stores, check_sent, started_bot
from tests.bot.processes import GatedIndexEmbedder, MemoryHog, killed_at
from tests.fake_discord import MANAGE_GUILD, run
from tests.helpers import FakeEmbedder

NEW_TEXT = (
    "\n\nA zebra crossing painted overnight in Kunduz surprised residents, who said nobody had asked "
    "for it and nobody knew who paid for the zebra paint.\n"
)
ZEBRA = "Who painted the zebra crossing in Kunduz?"


def add_zebra(settings) -> None:
    path = sorted(settings.corpus_dir.iterdir())[2]
    path.write_text(path.read_text() + NEW_TEXT)


async def reindex_outcome(rec, timeout: float = 30) -> dict:
    """The embed a /reindex ends with. (Not wait_final: the run can pause longer than its settle
    time between "Re-index running" and the end.)"""
    done = await rec.wait_for(
        lambda r: [e for e in r.ok_events if e.kind == "edit" and e.embeds[0]["title"] != "Re-index running"],
        timeout,
    )
    return done[-1].embeds[0]


async def ask_zebra(fake) -> bool:
    rec = await fake.send_slash("ask", {"question": ZEBRA}, member=fake.make_member())
    final = await rec.wait_final(timeout=10)
    check_sent(rec)
    return any("zebra" in e["description"] for e in final.embeds)


def test_reindex_refused_for_members_and_in_dms(fake_index, fake_embedder):
    async def main():
        async with started_bot(fake_index, fake_embedder) as (bot, fake):
            cmd = fake.command("reindex")
            assert int(cmd["default_member_permissions"]) == MANAGE_GUILD  # the hint...
            member = fake.make_member(permissions=0)
            rec = await fake.send_slash("reindex", member=member)  # ...and the check that counts
            ev = await rec.wait_final()
            assert ev.ephemeral and ev.content.startswith("You need the Manage Server permission")

            dm = await fake.send_slash("reindex", dm_user=fake.make_user())
            ev = await dm.wait_final()
            assert ev.ephemeral and ev.content == "This command only works in a server, not in direct messages."
            assert bot.serving.job is None
            check_sent(rec)
            check_sent(dm)

    run(main())


def test_admin_by_user_id_or_role(fake_index, fake_embedder):
    role_id, user_id = 4242424242424242, 5151515151515151
    settings = replace(fake_index, admin_role_ids=frozenset({role_id}), admin_user_ids=frozenset({user_id}))

    def add_role(fake):  # Discord sends the guild's roles in GUILD_CREATE
        fake.guild["roles"].append({**fake.everyone_role, "id": str(role_id), "name": "indexers", "position": 1})

    async def main():
        async with started_bot(settings, fake_embedder, prepare=add_role) as (bot, fake):
            by_role = await fake.send_slash("reindex", member=fake.make_member(roles=[role_id]))
            assert (await reindex_outcome(by_role))["title"] == "Re-index finished"
            by_id = await fake.send_slash("reindex", member=fake.make_member(user_id, permissions=0))
            assert (await reindex_outcome(by_id))["title"] == "Re-index finished"

    run(main())


def wait_for_file(path: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@both_stores("fake_index")
def test_reindex_while_serving_one_at_a_time_then_swap(fake_index, fake_embedder, tmp_path):
    gate = tmp_path / "gate"
    add_zebra(fake_index)
    admin = lambda fake: fake.make_member(permissions=MANAGE_GUILD)  # noqa: E731

    async def main():
        factory = functools.partial(GatedIndexEmbedder, str(gate))
        async with started_bot(fake_index, fake_embedder, index_embedder_factory=factory) as (bot, fake):
            first = await fake.send_slash("reindex", member=admin(fake))
            await first.wait_response()
            assert first.callback.embeds[0]["title"] == "Re-index running" and not first.ephemeral
            await asyncio.to_thread(wait_for_file, Path(f"{gate}.entered"))  # the job is embedding, and held there
            assert bot.serving.job.process.pid != os.getpid()  # in a process of its own

            second = await fake.send_slash("reindex", member=admin(fake))
            ev = await second.wait_final()
            assert ev.ephemeral and ev.content == "A re-index is already running; this one was not started."
            assert "1/1 files" in ev.embeds[0]["description"] or "files scanned" in ev.embeds[0]["description"]

            # /ask answers during the run, from the old index
            assert not await ask_zebra(fake)
            # progress edits while it runs
            edits = await first.wait_for(lambda r: [e for e in r.ok_events if e.kind == "edit"], timeout=5)
            assert "passages embedded" in edits[-1].embeds[0]["description"]

            gate.touch()
            final = await reindex_outcome(first)
            assert final["title"] == "Re-index finished"
            assert final["description"].startswith("0 added, 1 changed, 0 removed, 4 unchanged, 0 skipped")
            check_sent(first)

            assert await ask_zebra(fake)  # the new index serves right after the commit

            stats = await fake.send_slash("stats")
            ev = await stats.wait_final()
            assert ev.ephemeral
            fields = {f["name"]: f["value"] for f in ev.embeds[0]["fields"]}
            assert fields["Articles"] == "5" and "1 changed" in fields["Last re-index"]
            assert fields["Model"].startswith("fake-hash-embedder (256 dimensions)")
            check_sent(stats)

    run(main())


def test_failed_runs_keep_the_old_index_and_say_why(fake_index, fake_embedder):
    async def main():
        async with started_bot(fake_index, fake_embedder) as (bot, fake):
            before = bot.serving.index
            # another process (the CLI) holds the index lock
            with index_lock(fake_index.index_path):
                rec = await fake.send_slash("reindex", member=fake.make_member(permissions=MANAGE_GUILD))
                ev = await rec.wait_for(lambda r: [e for e in r.ok_events if e.kind == "edit"], timeout=10)
            embed = ev[-1].embeds[0]
            assert embed["title"] == "Re-index failed"
            assert "another index run is in progress" in embed["description"]
            assert embed["footer"]["text"] == "the previous index is still serving /ask"

            for p in fake_index.corpus_dir.iterdir():
                p.unlink()
            rec = await fake.send_slash("reindex", member=fake.make_member(permissions=MANAGE_GUILD))
            ev = await rec.wait_for(lambda r: [e for e in r.ok_events if e.kind == "edit"], timeout=10)
            assert "would leave the index empty" in ev[-1].embeds[0]["description"]
            assert bot.serving.index is before
            ask = await fake.send_slash("ask", {"question": "Kunduz"})
            assert len((await ask.wait_final(timeout=10)).embeds) == 5

    run(main())


@both_stores("no_index")
def test_bot_starts_without_an_index_and_reindex_builds_it(no_index, fake_embedder):
    async def main():
        async with started_bot(no_index, fake_embedder) as (bot, fake):
            rec = await fake.send_slash("ask", {"question": "Kunduz"})
            ev = await rec.wait_final()
            assert rec.callback_type == 4 and ev.ephemeral and "There is no index yet" in ev.content
            assert "/reindex" in ev.content
            run_ = await fake.send_slash("reindex", member=fake.make_member(permissions=MANAGE_GUILD))
            assert (await reindex_outcome(run_))["title"] == "Re-index finished"
            rec = await fake.send_slash("ask", {"question": "Kunduz"}, member=fake.make_member())
            assert (await rec.wait_final(timeout=10)).embeds

    run(main())


def test_admin_rights_come_from_each_interaction_real_permission_bits(fake_index, fake_embedder):
    """Whoever may re-index is decided from the member payload of each interaction (the roles and
    the `permissions` bits Discord computes), never remembered: a member listed through
    ADMIN_ROLE_IDS succeeds, the same user after the role was removed is refused; ordinary
    members, members whose permissions lack MANAGE_GUILD, and DMs are refused."""
    from tests.fake_discord import ADMINISTRATOR, DEFAULT_MEMBER_PERMISSIONS

    role_id, other_role = 4242424242424242, 7373737373737373
    settings = replace(fake_index, admin_role_ids=frozenset({role_id}))

    def add_roles(fake):
        for rid, name in ((role_id, "indexers"), (other_role, "moderators")):
            fake.guild["roles"].append({**fake.everyone_role, "id": str(rid), "name": name, "position": 1})

    async def reindex(fake, member=None, **kwargs):
        rec = await fake.send_slash("reindex", member=member, **kwargs)
        ev = await rec.wait_final(timeout=10)
        check_sent(rec)
        if rec.callback.embeds and rec.callback.embeds[0]["title"] == "Re-index running":
            ev = await rec.wait_for(
                lambda r: [e for e in r.ok_events if e.kind == "edit" and e.embeds[0]["title"] != "Re-index running"],
                timeout=10,
            )
            return ev[-1].embeds[0]["title"]
        assert ev.ephemeral and rec.callback_type == 4 and len(rec.events) == 1
        return ev.content

    refused = "You need the Manage Server permission (or to be listed as a bot admin) to do that."

    async def main():
        async with started_bot(settings, fake_embedder, prepare=add_roles) as (bot, fake):
            user_id = 6060606060606060
            perms = DEFAULT_MEMBER_PERMISSIONS
            assert (
                await reindex(fake, fake.make_member(user_id, roles=[role_id], permissions=perms))
                == "Re-index finished"
            )
            runs = bot.serving.job
            # the same user, the role removed (the next interaction's member payload lacks it)
            assert await reindex(fake, fake.make_member(user_id, roles=[], permissions=perms)) == refused
            assert await reindex(fake, fake.make_member(user_id, roles=[other_role], permissions=perms)) == refused
            # real permission bits: everything an ordinary member has, but not MANAGE_GUILD
            assert not perms & MANAGE_GUILD
            assert await reindex(fake, fake.make_member(permissions=perms)) == refused
            assert (
                await reindex(fake, fake.make_member(permissions=(1 << 41) - 1 & ~MANAGE_GUILD & ~ADMINISTRATOR))
                == refused
            )
            # a DM has no guild permissions or roles, even from the listed user
            dm = await reindex(fake, dm_user=fake.make_user(user_id))
            assert dm == "This command only works in a server, not in direct messages."
            assert bot.serving.job is runs  # no refused call started anything
            # the bits that do grant it
            assert await reindex(fake, fake.make_member(permissions=perms | MANAGE_GUILD)) == "Re-index finished"
            assert await reindex(fake, fake.make_member(permissions=ADMINISTRATOR)) == "Re-index finished"

    run(main())


def test_ask_keeps_answering_through_a_crashed_index_run(fake_index, fake_embedder, tmp_path):
    """An index process killed (SIGKILL) mid-write while the bot serves: /ask answers from the old
    index throughout, and the next /reindex picks up the change."""
    from tests.test_reliability_core import env_for, harness

    add_zebra(fake_index)
    admin = lambda fake: fake.make_member(permissions=MANAGE_GUILD)  # noqa: E731

    async def main():
        async with started_bot(fake_index, fake_embedder) as (bot, fake):
            for stage in ("mid-embed", "mid-write", "before-commit"):
                crashed = await asyncio.to_thread(
                    harness, tmp_path, "index", env=env_for(fake_index, CORPUS_BOT_CRASH_AT=stage)
                )
                assert crashed.returncode == -9, crashed.stderr[-500:]
                assert not await ask_zebra(fake)  # still the old, complete index

            rec = await fake.send_slash("reindex", member=admin(fake))
            done = await rec.wait_for(
                lambda r: [e for e in r.ok_events if e.kind == "edit" and e.embeds[0]["title"] != "Re-index running"],
                timeout=20,
            )
            assert done[-1].embeds[0]["title"] == "Re-index finished"
            assert done[-1].embeds[0]["description"].startswith("0 added, 1 changed, 0 removed, 4 unchanged")
            assert await ask_zebra(fake)

    run(main(), timeout=90)


def test_a_reindex_process_that_dies_leaves_the_bot_and_the_old_index_serving(fake_index, fake_embedder, caplog):
    """The index job runs in a process of its own: killed as the kernel kills a process out of
    memory (SIGKILL mid-embedding), or failing on a memory limit (MemoryError), it takes only
    itself down. The admin gets a failed run saying how it ended, /ask keeps answering from the
    previous index, the child's traceback is in the bot's log, and the next run succeeds."""
    add_zebra(fake_index)
    admin = lambda fake: fake.make_member(permissions=MANAGE_GUILD)  # noqa: E731
    expected = {
        functools.partial(
            killed_at, "mid-embed"
        ): "the index process was killed (SIGKILL: most often the system ran out of memory) before it finished",
        MemoryHog: "an unexpected error stopped the run (MemoryError: Unable to allocate 16.0 GiB for an array "
        "with shape (2147483648,) and data type float64); the details are in the bot's log",
    }

    async def main():
        async with started_bot(fake_index, fake_embedder, heartbeat_interval_ms=500) as (bot, fake):
            before = bot.serving.index
            for factory, message in expected.items():
                bot.serving.index_embedder_factory = factory
                with caplog.at_level(logging.INFO):
                    embed = await reindex_outcome(await fake.send_slash("reindex", member=admin(fake)))
                assert embed["title"] == "Re-index failed"
                assert embed["description"] == message
                assert embed["footer"]["text"] == "the previous index is still serving /ask"
                assert bot.serving.index is before and not await ask_zebra(fake)
            # the MemoryError's traceback, logged by the index process through the bot's logging
            child = [r for r in caplog.records if r.name == "bot.index_process" and r.process != os.getpid()]
            assert child and "MemoryError" in child[-1].exc_text and "np.ones" in child[-1].exc_text
            assert max(fake.heartbeat_gaps()) <= fake.heartbeat_interval + 0.4

            bot.serving.index_embedder_factory = FakeEmbedder
            embed = await reindex_outcome(await fake.send_slash("reindex", member=admin(fake)))
            assert embed["title"] == "Re-index finished" and embed["description"].startswith("0 added, 1 changed")
            assert await ask_zebra(fake)

    run(main(), timeout=60)


def test_a_reindex_process_killed_after_its_commit_serves_what_it_committed(fake_index, fake_embedder):
    """Killed after the commit (while writing the copies derived from it), the run still changed
    the index: the admin is told so, and /ask answers from the new index."""
    add_zebra(fake_index)

    async def main():
        factory = functools.partial(killed_at, "after-commit")
        async with started_bot(fake_index, fake_embedder, index_embedder_factory=factory) as (bot, fake):
            embed = await reindex_outcome(
                await fake.send_slash("reindex", member=fake.make_member(permissions=MANAGE_GUILD))
            )
            assert embed["title"] == "Re-index failed"
            assert embed["description"] == (
                "the index process was killed (SIGKILL: most often the system ran out of memory) before it finished; "
                "it had committed its changes, which /ask now answers from"
            )
            assert embed["footer"]["text"] == "/ask now answers from the new index"
            assert await ask_zebra(fake)

    run(main())


def test_reindex_refuses_to_remove_most_articles_until_an_admin_confirms(tmp_path, fake_embedder):
    """A corpus folder that lost most of its files (a wrong mount, a wrong CORPUS_DIR) is not
    indexed: the reply gives the counts and the option that confirms; nothing changes, /ask still
    quotes the articles; `allow_removals:True` goes ahead."""
    from tests.test_index_removals import settings_for, write_articles

    settings = settings_for(tmp_path, fake_embedder)
    write_articles(settings.corpus_dir, range(12))
    run_index(settings)
    for path in sorted(settings.corpus_dir.iterdir())[:9]:
        path.unlink()
    admin = lambda fake: fake.make_member(permissions=MANAGE_GUILD)  # noqa: E731

    async def council_of_town_3(fake) -> bool:
        rec = await fake.send_slash("ask", {"question": "the council of town 3"}, member=fake.make_member())
        return any("town 3 met" in e["description"] for e in (await rec.wait_final(timeout=10)).embeds)

    async def main():
        async with started_bot(settings, fake_embedder) as (bot, fake):
            option = fake.command("reindex")["options"][0]
            assert (option["name"], option["type"], option.get("required", False)) == ("allow_removals", 5, False)

            embed = await reindex_outcome(await fake.send_slash("reindex", member=admin(fake)))
            assert embed["title"] == "Re-index failed"
            assert embed["description"].replace("\\", "") == (  # markdown escapes removed
                f"this run would remove 9 of the 12 indexed articles ({settings.corpus_dir} has 3: is CORPUS_DIR "
                "the right folder?); nothing was written. If they should go, run /reindex allow_removals:True"
            )
            assert len(bot.serving.index.articles) == 12 and await council_of_town_3(fake)

            rec = await fake.send_slash("reindex", {"allow_removals": True}, member=admin(fake))
            embed = await reindex_outcome(rec)
            assert embed["title"] == "Re-index finished"
            assert embed["description"].startswith("0 added, 0 changed, 9 removed, 3 unchanged")
            assert len(bot.serving.index.articles) == 3 and not await council_of_town_3(fake)
            check_sent(rec)

    run(main())
