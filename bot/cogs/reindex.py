"""/reindex: the CLI's incremental index job, run in a child process while /ask keeps answering."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from .. import render
from ..checks import index_admin_only
from ..serving import AlreadyRunning, ReindexJob

if TYPE_CHECKING:
    from ..app import CorpusBot

log = logging.getLogger(__name__)
NONE = discord.AllowedMentions.none()
TOKEN_LIFETIME = 14 * 60  # interaction tokens last 15 min; after that, edit through the channel


class Reindex(commands.Cog):
    def __init__(self, bot: CorpusBot) -> None:
        self.bot = bot

    @app_commands.command(name="reindex", description="Re-index the corpus folder (Manage Server or bot admins)")
    @app_commands.describe(
        allow_removals="Confirm a run that removes more than half of the indexed articles (refused otherwise)",
    )
    @app_commands.default_permissions(manage_guild=True)  # hides it from others by default...
    @app_commands.guild_only()
    @index_admin_only()  # ...and this is the check that counts
    async def reindex(self, interaction: discord.Interaction, allow_removals: bool = False) -> None:
        try:
            job = self.bot.serving.start_reindex(started_by=str(interaction.user), allow_removals=allow_removals)
        except AlreadyRunning as running:
            await interaction.response.send_message(
                "A re-index is already running; this one was not started.",
                embed=render.progress_embed(running.job.progress, started_by=running.job.started_by),
                ephemeral=True,
                allowed_mentions=NONE,
            )
            return
        response = await interaction.response.send_message(
            embed=render.progress_embed(None, started_by=job.started_by), allowed_mentions=NONE
        )
        await self._follow(interaction, job, response.message_id)

    async def _follow(self, interaction: discord.Interaction, job: ReindexJob, message_id: int | None) -> None:
        """Edit the reply every few seconds with the job's progress, then with its outcome."""
        shown = None
        while not job.done.is_set():
            try:
                await asyncio.wait_for(job.done.wait(), self.bot.progress_interval)
            except TimeoutError:
                text = job.progress.describe() if job.progress else None
                if text != shown:  # no edit (and no rate-limit budget spent) when nothing moved
                    shown = text
                    await self._edit(
                        interaction, message_id, render.progress_embed(job.progress, started_by=job.started_by)
                    )
        embed = render.report_embed(job.report) if job.report else render.failure_embed(job.error or "unknown error")
        if job.report is None and job.committed:  # the run died after its commit: not the previous index
            embed.set_footer(text="/ask now answers from the new index")
        await self._edit(interaction, message_id, embed)

    async def _edit(self, interaction: discord.Interaction, message_id: int | None, embed: discord.Embed) -> None:
        try:
            age = (discord.utils.utcnow() - interaction.created_at).total_seconds()
            if age < TOKEN_LIFETIME or not message_id:
                await interaction.edit_original_response(embed=embed, allowed_mentions=NONE)
            else:
                channel = interaction.channel
                await channel.get_partial_message(message_id).edit(embed=embed, allowed_mentions=NONE)  # type: ignore[union-attr]
        except discord.HTTPException as exc:  # a deleted reply must not stop the job or its swap
            log.warning("could not update the /reindex reply: %s", exc)


async def setup(bot: CorpusBot) -> None:
    await bot.add_cog(Reindex(bot))
