"""/sources (the indexed articles, paged) and /stats (the index and its last re-index)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from embeddings.answer import Article

from .. import render
from ..app import handle_error

if TYPE_CHECKING:
    from ..app import CorpusBot

log = logging.getLogger(__name__)
NONE = discord.AllowedMentions.none()


class SourcesView(discord.ui.View):
    """Previous/Next over a fixed list of articles (the snapshot at the time of the command)."""

    def __init__(self, articles: list[Article], *, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.articles = articles
        self.page = 0
        self.pages = max(1, -(-len(articles) // render.SOURCES_PER_PAGE))
        self.message: discord.InteractionMessage | None = None
        self._sync()

    def embed(self) -> discord.Embed:
        return render.sources_page(self.articles, self.page)

    def _sync(self) -> None:
        self.previous.disabled = self.page == 0
        self.next.disabled = self.page >= self.pages - 1

    async def _show(self, interaction: discord.Interaction, page: int) -> None:
        self.page = min(max(page, 0), self.pages - 1)
        self._sync()
        await interaction.response.edit_message(embed=self.embed(), view=self, allowed_mentions=NONE)

    @discord.ui.button(label="Previous", emoji="◀️", style=discord.ButtonStyle.secondary)
    async def previous(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._show(interaction, self.page - 1)

    @discord.ui.button(label="Next", emoji="▶️", style=discord.ButtonStyle.primary)
    async def next(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._show(interaction, self.page + 1)

    async def on_timeout(self) -> None:
        for item in self.children:
            item.disabled = True  # type: ignore[attr-defined]
        if self.message is not None:
            try:
                await self.message.edit(view=self, allowed_mentions=NONE)
            except discord.HTTPException as exc:
                log.info("could not disable the /sources buttons: %s", exc)

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item) -> None:
        await handle_error(interaction, error, "/sources paging")


class Sources(commands.Cog):
    def __init__(self, bot: CorpusBot) -> None:
        self.bot = bot

    @app_commands.command(name="sources", description="List the indexed articles (only you see the list)")
    async def sources(self, interaction: discord.Interaction) -> None:
        articles = sorted(self.bot.serving.current().articles, key=lambda a: a.display_title.casefold())
        view = SourcesView(articles, timeout=self.bot.view_timeout)
        kwargs: dict = {"embed": view.embed(), "ephemeral": True, "allowed_mentions": NONE}
        if view.pages > 1:
            kwargs["view"] = view
        response = await interaction.response.send_message(**kwargs)
        if view.pages > 1 and isinstance(response.resource, discord.InteractionMessage):
            view.message = response.resource

    @app_commands.command(name="stats", description="Index size, model and the last re-index (only you see it)")
    async def stats(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        stats = await self.bot.serving.stats()
        job = self.bot.serving.job
        job_line = job.describe() if job is not None and not job.done.is_set() else None
        index = self.bot.serving.index
        embed = render.stats_embed(
            stats, stats["last_run"], serving=index.passage_count if index is not None else None, job_line=job_line
        )
        await interaction.followup.send(embed=embed, ephemeral=True, allowed_mentions=NONE)


async def setup(bot: CorpusBot) -> None:
    await bot.add_cog(Sources(bot))
