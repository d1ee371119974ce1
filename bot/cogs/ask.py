"""/ask and the "Find sources" message command: a question in, quoted passages out."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from embeddings.answer import Answer
from embeddings.gaps import note_weak_question
from embeddings.search import DEFAULT_MODE, Filters, parse_iso_date
from embeddings.search_options import check_question_text

from .. import render
from ..app import UserFacingError, defer, handle_error
from ..checks import ask_cooldown

if TYPE_CHECKING:
    from ..app import CorpusBot

log = logging.getLogger(__name__)

MAX_RESULTS = 10  # one embed per result, and a message holds 10 embeds
DEFAULT_RESULTS = 5
MAX_CLAIM_CHARS = 1000  # "Find sources": the model reads ~256 tokens anyway
NONE = discord.AllowedMentions.none()


def answer_payload(answer: Answer) -> dict:
    return {"content": render.answer_content(answer), "embeds": render.answer_embeds(answer)}


def claim_text(message: discord.Message) -> str:
    """The text of a chat message to check, cut at a word if it is very long."""
    text = " ".join((message.content or "").split())
    if not text and message.embeds:  # e.g. a bot's message: check its first embed's text
        embed = message.embeds[0]
        text = " ".join(" ".join(filter(None, [embed.title, embed.description])).split())
    if len(text) > MAX_CLAIM_CHARS:
        head = text[:MAX_CLAIM_CHARS].rpartition(" ")[0]
        text = head or text[:MAX_CLAIM_CHARS]
    return text


class AnswerView(discord.ui.View):
    """Buttons under an answer: "Previous"/"More" re-run the same search one page back or on
    (only for the person who asked), a "Context" menu shows a passage's neighbouring paragraphs
    to whoever picks it, privately, and 👍 / 👎 store a vote on the page shown (anyone who sees
    the answer may vote; each click is one row). Disabled, with a note, when the view times out."""

    def __init__(
        self,
        bot: CorpusBot,
        *,
        owner_id: int,
        question: str,
        k: int,
        filters: Filters,
        answer: Answer,
        mode: str = DEFAULT_MODE,
    ):
        super().__init__(timeout=bot.view_timeout)
        self.bot = bot
        self.owner_id = owner_id
        self.question = question
        self.k = k
        self.filters = filters
        self.answer = answer
        self.mode = mode
        self.message: discord.WebhookMessage | None = None
        #: (user id, page offset) -> the last vote, only to word the reply ("updated").
        self.votes: dict[tuple[int, int], int] = {}
        self.context = discord.ui.Select(placeholder="Context: show the paragraphs around a passage…", row=0)
        self.context.callback = self.show_context
        self.previous = discord.ui.Button(label="Previous", emoji="◀️", style=discord.ButtonStyle.secondary, row=1)
        self.previous.callback = self.previous_page
        self.more = discord.ui.Button(label="More", emoji="▶️", style=discord.ButtonStyle.primary, row=1)
        self.more.callback = self.next_page
        self.upvote = discord.ui.Button(emoji="👍", style=discord.ButtonStyle.secondary, row=2)
        self.upvote.callback = self.vote_up
        self.downvote = discord.ui.Button(emoji="👎", style=discord.ButtonStyle.secondary, row=2)
        self.downvote.callback = self.vote_down
        for item in (self.context, self.previous, self.more, self.upvote, self.downvote):
            self.add_item(item)
        self._refresh()

    def _refresh(self) -> None:
        """Match the components to the page shown (same custom ids, so older clicks still work)."""
        self.context.options = []
        for r in self.answer.results:
            label, description = render.context_option(r)
            self.context.add_option(label=label, description=description, value=str(r.passage_id))
        self.previous.disabled = self.answer.offset == 0
        self.more.disabled = not self.answer.has_more

    async def show_context(self, interaction: discord.Interaction) -> None:
        passage_id = int(interaction.data["values"][0])  # type: ignore[index]
        self.bot.serving.current()
        with self.bot.serving.slot():  # Busy: refused privately, before the defer
            await defer(interaction, ephemeral=True)
            passages = await self.bot.serving.context(passage_id)
        await interaction.followup.send(
            embeds=render.context_embeds(passages, passage_id), ephemeral=True, allowed_mentions=NONE
        )

    async def previous_page(self, interaction: discord.Interaction) -> None:
        await self._turn(interaction, max(0, self.answer.offset - self.k))

    async def next_page(self, interaction: discord.Interaction) -> None:
        await self._turn(interaction, self.answer.offset + len(self.answer.results))

    async def vote_up(self, interaction: discord.Interaction) -> None:
        await self._vote(interaction, 1)

    async def vote_down(self, interaction: discord.Interaction) -> None:
        await self._vote(interaction, -1)

    async def _vote(self, interaction: discord.Interaction, vote: int) -> None:
        answer = self.answer  # the page the message shows now (a page turn may replace it meanwhile)
        await defer(interaction, ephemeral=True)  # the write may wait on a running re-index's lock
        await self.bot.serving.record_vote(answer, user_id=interaction.user.id, vote=vote, mode=self.mode)
        key = (interaction.user.id, answer.offset)
        again = key in self.votes
        self.votes[key] = vote
        what = "updated" if again else "recorded"
        await interaction.followup.send(
            f"Thanks — your vote ({'👍' if vote > 0 else '👎'}) was {what}.", ephemeral=True, allowed_mentions=NONE
        )

    async def _turn(self, interaction: discord.Interaction, offset: int) -> None:
        if interaction.user.id != self.owner_id:
            raise UserFacingError("only the person who asked can turn these pages; use /ask for your own question")
        self.bot.serving.current()
        with self.bot.serving.slot():  # Busy: refused privately, before the defer
            await interaction.response.defer()  # "deferred update": the message stays, the search runs
            answer = await self.bot.serving.search(
                self.question, k=self.k, offset=offset, filters=self.filters, mode=self.mode
            )
        if not answer.results:
            raise UserFacingError("there are no more results (the index changed since this question was asked)")
        self.answer = answer
        self._refresh()
        await interaction.edit_original_response(**answer_payload(answer), view=self, allowed_mentions=NONE)

    async def on_timeout(self) -> None:
        for item in self.children:
            item.disabled = True  # type: ignore[attr-defined]
        if self.message is None:
            return
        note = "\n-# These buttons have expired: ask again to see more results or context, or to vote."
        try:
            await self.message.edit(content=render.answer_content(self.answer) + note, view=self, allowed_mentions=NONE)
        except discord.HTTPException as exc:  # deleted message, expired token: nothing to update
            log.info("could not disable the buttons of message %s: %s", self.message.id, exc)

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item) -> None:
        await handle_error(interaction, error, f"{item!r} of an answer")


class Ask(commands.Cog):
    def __init__(self, bot: CorpusBot) -> None:
        self.bot = bot
        self.find_sources_menu = app_commands.ContextMenu(name="Find sources", callback=self.find_sources)
        bot.tree.add_command(self.find_sources_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.find_sources_menu.name, type=self.find_sources_menu.type)

    @app_commands.command(name="ask", description="Ask about the news corpus; the answer quotes its articles")
    @app_commands.describe(
        question="Your question, in plain words",
        results="How many passages to show (1-10, default 5)",
        source="Only articles from this publication or with this title",
        since="Only articles published on or after this date (YYYY-MM-DD)",
        until="Only articles published on or before this date (YYYY-MM-DD)",
        private="Show the answer only to you",
    )
    @ask_cooldown
    async def ask(
        self,
        interaction: discord.Interaction,
        question: app_commands.Range[str, 1, 300],
        results: app_commands.Range[int, 1, MAX_RESULTS] = DEFAULT_RESULTS,
        source: app_commands.Range[str, 1, 100] | None = None,
        since: app_commands.Range[str, 1, 10] | None = None,
        until: app_commands.Range[str, 1, 10] | None = None,
        private: bool = False,
    ) -> None:
        # Cheap validation first, so refusals are private (after a public defer they could not be).
        if not question.strip():
            raise UserFacingError("the question is empty")
        check_question_text(question)
        filters = Filters(
            source=(source or "").strip() or None,
            since=parse_iso_date(since, "since") if since else None,
            until=parse_iso_date(until, "until") if until else None,
        )
        if filters.since and filters.until and filters.since > filters.until:
            raise UserFacingError(f"since ({filters.since}) is after until ({filters.until})")
        answer = await self.answer(interaction, question, k=results, filters=filters, ephemeral=private)
        if answer.weak:  # what the corpus lacks, for /gaps; after the answer is sent, never failing it
            await note_weak_question(
                self.bot.serving.settings, question, guild_id=interaction.guild_id, user_id=interaction.user.id
            )

    @ask.autocomplete("source")
    async def source_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        needle = current.casefold().strip()
        names = [n for n in self.bot.serving.source_names() if needle in n.casefold()]
        names.sort(key=lambda n: not n.casefold().startswith(needle))  # prefix matches first (stable)
        choices = []
        for name in names[:25]:
            shown, value = render.choice_name(name)
            choices.append(app_commands.Choice(name=shown, value=value))
        return choices

    @ask_cooldown
    async def find_sources(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Message command: check what a chat message claims against the corpus (private answer)."""
        question = claim_text(message)
        if not question:
            raise UserFacingError("that message has no text to look up")
        await self.answer(interaction, question, k=DEFAULT_RESULTS, filters=Filters(), ephemeral=True)

    async def answer(
        self, interaction: discord.Interaction, question: str, *, k: int, filters: Filters, ephemeral: bool
    ) -> Answer:
        # No index yet, or too many questions queued (Busy): refused privately, before a public
        # defer. The place in the queue is held from before the defer until the search is done.
        self.bot.serving.current()
        with self.bot.serving.slot():
            await defer(interaction, ephemeral=ephemeral)
            answer = await self.bot.serving.search(question, k=k, filters=filters)
        kwargs: dict = answer_payload(answer)
        view = None
        if answer.results:
            view = AnswerView(
                self.bot, owner_id=interaction.user.id, question=question, k=k, filters=filters, answer=answer
            )
            kwargs["view"] = view
        # The first followup after a defer replaces the "thinking…" message (same visibility).
        message = await interaction.followup.send(**kwargs, allowed_mentions=NONE, wait=True)
        interaction.extras["answered"] = True
        if view is not None:
            view.message = message
        return answer


async def setup(bot: CorpusBot) -> None:
    await bot.add_cog(Ask(bot))
