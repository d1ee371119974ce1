"""/gaps: the questions the corpus answered weakly, grouped (admins only; only they see it)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from embeddings.gaps import list_weak_questions
from embeddings.search import parse_iso_date
from embeddings.terminal import counted

from .. import render
from ..app import defer
from ..checks import index_admin_only
from ..serving import UNREACHABLE, Unavailable

if TYPE_CHECKING:
    from ..app import CorpusBot

log = logging.getLogger(__name__)
NONE = discord.AllowedMentions.none()


class Gaps(commands.Cog):
    def __init__(self, bot: CorpusBot) -> None:
        self.bot = bot

    @app_commands.command(name="gaps", description="Questions the corpus answered weakly (Manage Server or bot admins)")
    @app_commands.describe(since="Only questions asked on or after this date (YYYY-MM-DD)")
    @app_commands.default_permissions(manage_guild=True)  # hides it from others by default...
    @app_commands.guild_only()
    @index_admin_only()  # ...and this is the check that counts
    async def gaps(self, interaction: discord.Interaction, since: app_commands.Range[str, 1, 10] | None = None) -> None:
        since_date = parse_iso_date(since, "since") if since else None
        await defer(interaction, ephemeral=True)
        settings = self.bot.serving.settings
        # A server's admins see their server's questions; the bot's own admins (ADMIN_USER_IDS)
        # see every server's, as `corpus-bot gaps` does.
        everywhere = interaction.user.id in settings.admin_user_ids
        embedder = self.bot.serving.embedder
        try:
            gaps, questions = await asyncio.to_thread(
                list_weak_questions,
                settings,
                since=since_date,
                guild_id=None if everywhere else interaction.guild_id,
                embed=embedder.encode if embedder is not None else None,
            )
        except self.bot.serving.index_store.read_errors as exc:  # the database is away
            log.warning("cannot read the weak questions: %s", exc)
            raise Unavailable(UNREACHABLE) from None
        window = f"since {since_date}" if since_date else f"in the last {counted(settings.gaps_keep_days, 'day')}"
        embed = render.gaps_embed(gaps, questions=questions, window=window, everywhere=everywhere)
        await interaction.followup.send(embed=embed, ephemeral=True, allowed_mentions=NONE)


async def setup(bot: CorpusBot) -> None:
    await bot.add_cog(Gaps(bot))
