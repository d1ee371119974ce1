"""/feeds add|list|remove, and the scheduled refresh (REFRESH_EVERY): fetch the feeds, re-index
through the same child-process job as /reindex when they brought new articles, and post what
changed or failed to ADMIN_CHANNEL_ID.

The feeds themselves (registry, HTTP, articles) are embeddings/feeds/; this cog only calls it in a
thread and renders the outcome.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from embeddings.errors import CorpusBotError
from embeddings.feeds import add_feed, fetch_feeds, list_feeds, remove_feed
from embeddings.feeds.fetch import FEEDS_FOLDER

from .. import render
from ..app import defer, error_message, reply_error
from ..checks import index_admin_only, is_index_admin
from ..serving import AlreadyRunning

if TYPE_CHECKING:
    from ..app import CorpusBot

log = logging.getLogger(__name__)
NONE = discord.AllowedMentions.none()
STARTED_BY = "scheduled refresh"


class Feeds(commands.Cog):
    feeds = app_commands.Group(
        name="feeds",
        description="News feeds whose new articles join the corpus (Manage Server or bot admins)",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),  # hides it by default; the check counts
    )

    def __init__(self, bot: CorpusBot) -> None:
        self.bot = bot
        self.refresher: asyncio.Task | None = None
        #: articles were written but no index run took them in yet (skipped or failed): index next round.
        self.index_pending = False
        #: scheduled rounds finished (tests wait on it).
        self.rounds = 0

    async def cog_load(self) -> None:
        settings = self.bot.settings
        if not settings.refresh_every:
            return
        if settings.shard_ids is not None and 0 not in settings.shard_ids:
            # Processes sharing the corpus would fetch the same feeds: the one running shard 0 does.
            log.info("scheduled refresh left to the process running shard 0")
            return
        log.info("fetching the feeds every %s", render.period(settings.refresh_every))
        self.refresher = asyncio.create_task(self._refresh_every(settings.refresh_every), name="corpus-feeds-refresh")

    async def cog_unload(self) -> None:
        if self.refresher is not None:
            self.refresher.cancel()

    # ------------------------------------------------------------------------------- commands

    @feeds.command(name="add", description="Add a news feed (RSS, Atom or JSON Feed); it is fetched once to check it")
    @app_commands.describe(
        url="The feed's address (http or https)",
        name="A short name: lowercase letters, digits and '-' (by default from the feed's host)",
    )
    @index_admin_only()
    async def add(
        self,
        interaction: discord.Interaction,
        url: app_commands.Range[str, 1, 2000],
        name: app_commands.Range[str, 1, 63] | None = None,
    ) -> None:
        await defer(interaction, ephemeral=True)  # fetching the feed can take seconds
        try:
            feed = await asyncio.to_thread(add_feed, self.bot.settings, url, name)
        except CorpusBotError as exc:
            await self._refuse(interaction, exc)
            return
        text = render.feed_added(feed.name, feed.title, feed.url, self.bot.settings.refresh_every)
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NONE)

    @feeds.command(name="list", description="List the news feeds and the articles written from each")
    @index_admin_only()
    async def list_command(self, interaction: discord.Interaction) -> None:
        try:
            feeds = await asyncio.to_thread(list_feeds, self.bot.settings)
        except CorpusBotError as exc:
            await self._refuse(interaction, exc)
            return
        rows = [(f.name, f.title, f.url, articles) for f, articles in feeds]
        await interaction.response.send_message(embed=render.feeds_embed(rows), ephemeral=True, allowed_mentions=NONE)

    @feeds.command(name="remove", description="Stop fetching a news feed (its articles already written stay)")
    @app_commands.describe(name="The feed's name (see /feeds list)")
    @index_admin_only()
    async def remove(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 63]) -> None:
        try:
            feed = await asyncio.to_thread(remove_feed, self.bot.settings, name)
        except CorpusBotError as exc:
            await self._refuse(interaction, exc)
            return
        folder = f"{FEEDS_FOLDER}/{feed.name}/"
        await interaction.response.send_message(
            render.feed_removed(feed.name, folder), ephemeral=True, allowed_mentions=NONE
        )

    @remove.autocomplete("name")
    async def _feed_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        if not is_index_admin(interaction):
            return []
        try:
            feeds = await asyncio.to_thread(list_feeds, self.bot.settings)
        except CorpusBotError:
            return []
        names = [f.name for f, _ in feeds if current.lower() in f.name]
        return [app_commands.Choice(name=n, value=n) for n in names[:25]]

    async def _refuse(self, interaction: discord.Interaction, exc: CorpusBotError) -> None:
        await reply_error(interaction, render.error_line(error_message(exc) or str(exc)))

    # ------------------------------------------------------------------------------- schedule

    async def _refresh_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.refresh_once()
            except Exception:  # the next round still runs
                log.exception("the scheduled refresh failed")
            self.rounds += 1

    async def refresh_once(self) -> None:
        """Fetch every feed; re-index when that wrote articles (or an earlier round's are still
        not indexed); post a summary when something changed or failed."""
        problems: list[str] = []
        fetched, written = None, 0
        try:
            report = await asyncio.to_thread(fetch_feeds, self.bot.settings)
        except CorpusBotError as exc:  # another fetch holds the lock, the registry cannot be read
            log.warning("scheduled refresh: the feeds could not be fetched: %s", exc)
            problems.append(f"the feeds could not be fetched: {exc}")
        except Exception:
            log.exception("scheduled refresh: the feeds could not be fetched")
            problems.append("the feeds could not be fetched: an unexpected error (details are in the bot's log)")
        else:
            log.info("scheduled refresh: %s", report.summary())
            fetched = report.summary()
            problems += report.failures
            written = len(report.written)
            if written:
                self.index_pending = True
        failed = bool(problems)
        index_line = None
        if self.index_pending:
            # The index's own lines (files it skipped) are listed but do not make the round a failure.
            index_line, index_problems, index_failed = await self._index()
            problems += index_problems
            failed = failed or index_failed
        if problems or index_line or written:
            await self._post(render.refresh_embed(fetched, index_line, problems, failed=failed))

    async def _index(self) -> tuple[str, list[str], bool]:
        """(the index's line, its problem lines, whether it failed) after the same job as /reindex."""
        try:
            job = self.bot.serving.start_reindex(started_by=STARTED_BY)
        except AlreadyRunning as running:
            log.info("scheduled refresh: a re-index is running, the new articles wait for the next round")
            return (
                f"Index not updated: a re-index started by {running.job.started_by} is running; "
                "the new articles are indexed at the next refresh",
                [],
                False,
            )
        await job.done.wait()
        if job.report is not None or job.committed:
            self.index_pending = False
        if job.report is not None:
            return "Index updated: " + job.report.summary(), job.report.problem_lines(), False
        return f"Index not updated: {job.error or 'unknown error'}", [], True

    async def _post(self, embed: discord.Embed) -> None:
        channel_id = self.bot.settings.admin_channel_id
        if channel_id is None:
            return
        try:
            channel = self.bot.get_channel(channel_id) or await self.bot.fetch_channel(channel_id)
            if not isinstance(channel, discord.abc.Messageable):
                log.warning("ADMIN_CHANNEL_ID %s is not a text channel: the refresh summary was not posted", channel_id)
                return
            await channel.send(embed=embed, allowed_mentions=NONE)
        except discord.HTTPException as exc:  # unknown channel, no access: the round itself went fine
            log.warning("cannot post the refresh summary to ADMIN_CHANNEL_ID %s: %s", channel_id, exc)


async def setup(bot: CorpusBot) -> None:
    await bot.add_cog(Feeds(bot))
