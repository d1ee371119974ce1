"""The bot: `create_bot()` builds it (tests and other programs use this), `run_bot()` runs it.

One-time set-up (the model, the index, the cogs, the command sync) happens in `setup_hook`, which
discord.py runs once after login; `on_ready` can fire again after every reconnect.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import traceback

import click
import discord
from discord import app_commands
from discord.ext import commands

from embeddings.config import Settings
from embeddings.errors import CorpusBotError

from .checks import NotIndexAdmin
from .serving import MUST_PROPAGATE, Serving

log = logging.getLogger(__name__)

EXTENSIONS = ("bot.cogs.ask", "bot.cogs.sources", "bot.cogs.reindex", "bot.cogs.gaps", "bot.cogs.feeds")


class UserFacingError(CorpusBotError):
    """A refusal of the bot's own whose message is meant for the user as is (shown ephemeral)."""


# Discord error codes meaning the interaction can no longer be answered: 10062 Unknown
# interaction (acknowledged too late, or over 15 minutes old), 10015 Unknown Webhook and 50027
# Invalid Webhook Token (its followup token expired). Retrying or apologising cannot reach the user.
GONE_CODES = frozenset({10062, 10015, 50027})


def discord_trouble(error: BaseException) -> str | None:
    """A one-line description when error means Discord cannot take our reply (the interaction is
    gone, or Discord kept failing after discord.py's own bounded retries); None otherwise.
    Such errors are logged as one warning, without a traceback and without a further reply
    (which would fail the same way, or add load to a struggling Discord)."""
    error = getattr(error, "original", error)
    if isinstance(error, discord.HTTPException) and error.code in GONE_CODES:
        return f"the interaction expired or is unknown to Discord ({error.status}, code {error.code})"
    if isinstance(error, discord.DiscordServerError):
        return f"Discord kept answering {error.status} after discord.py's retries"
    return None


def error_message(error: BaseException) -> str | None:
    """The friendly text for an app-command error; None when it is unexpected (log it)."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, CorpusBotError):
        text = str(error)
        return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"You're asking a lot at once: try again in {max(1, round(error.retry_after))} s."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command only works in a server, not in direct messages."
    if isinstance(error, (NotIndexAdmin, app_commands.MissingPermissions)):
        return "You need the Manage Server permission (or to be listed as a bot admin) to do that."
    if isinstance(error, app_commands.BotMissingPermissions):
        missing = ", ".join(p.replace("_", " ") for p in error.missing_permissions)
        return f"I'm missing permissions in this channel: {missing}."
    if isinstance(error, app_commands.TransformerError):
        return "One of the options has a value I can't use."
    if isinstance(error, app_commands.CheckFailure):
        return "You can't use this command here."
    return None


async def reply_error(interaction: discord.Interaction, text: str) -> None:
    """Send text ephemerally whatever state the interaction is in."""
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=True)
            return
        if (
            interaction.response.type is discord.InteractionResponseType.deferred_channel_message
            and not interaction.extras.get("ephemeral_defer", False)
            and not interaction.extras.get("answered", False)
        ):
            # The public "thinking…" message: the next followup would edit it and stay public.
            # Remove it so the error can be private.
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
        await interaction.followup.send(text, ephemeral=True)
    except discord.HTTPException as exc:  # expired interaction, Discord outage: nothing to tell
        log.warning("could not send the error reply for interaction %s: %s", interaction.id, exc)


async def defer(interaction: discord.Interaction, *, ephemeral: bool) -> None:
    """Acknowledge at once ("… is thinking"); remembers the visibility for the error path."""
    interaction.extras["ephemeral_defer"] = ephemeral
    await interaction.response.defer(ephemeral=ephemeral, thinking=True)


async def handle_error(interaction: discord.Interaction, error: BaseException, where: str) -> None:
    """The one error path of commands and buttons: Discord trouble is logged once (nobody to tell),
    users get a friendly private line, unexpected errors are logged with their traceback."""
    original = getattr(error, "original", error)
    trouble = discord_trouble(original)
    if trouble is not None:
        log.warning("could not answer interaction %s: %s", interaction.id, trouble)
        return
    text = error_message(error)
    if text is None:
        log.error(
            "unexpected error in %s (interaction %s)\n%s",
            where,
            interaction.id,
            "".join(traceback.format_exception(original)),
        )
        text = "Something went wrong; the error was logged. Please try again later."
    await reply_error(interaction, text)


class CorpusTree(app_commands.CommandTree):
    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await handle_error(interaction, error, _command_name(interaction))

    async def _call(self, interaction: discord.Interaction) -> None:
        """discord.py hands only Exception to on_error: anything else raised by a command (the
        PanicException of a Rust library, which derives from BaseException) ended the task, and the
        user saw "thinking…" forever. Answer it like any unexpected error; what must stop the bot
        (KeyboardInterrupt, SystemExit, cancellation) still does. (Overrides discord.py's private
        dispatch method: discord.py is pinned below 2.8, and tests/bot/test_escaping_errors.py
        fails if the override stops being called.)"""
        try:
            await super()._call(interaction)
        except (app_commands.AppCommandError, *MUST_PROPAGATE):
            raise  # discord.py sends the first to on_error
        except BaseException as exc:
            await handle_error(interaction, exc, _command_name(interaction))


def _command_name(interaction: discord.Interaction) -> str:
    return interaction.command.qualified_name if interaction.command else "?"


class CorpusBot(commands.AutoShardedBot):
    """The bot with the corpus-bot settings, the serving state and the slash commands.

    Always sharded: with SHARD_COUNT unset, discord.py asks Discord for its recommended count at
    start (one shard until a bot is in thousands of servers), so a growing bot needs no new
    setting, and one process runs every shard. SHARD_COUNT and SHARD_IDS split the shards across
    processes."""

    def __init__(
        self,
        settings: Settings,
        *,
        embedder=None,
        index_embedder_factory=None,
        sync_global: bool = False,
        **options,
    ) -> None:
        options.setdefault("intents", discord.Intents.default())  # no privileged intents needed
        # A text-only bot: skip discord.py's start-up warnings about voice libraries.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        options.setdefault("help_command", None)
        options.setdefault("shard_count", settings.shard_count)
        if settings.shard_ids is not None:
            options.setdefault("shard_ids", list(settings.shard_ids))
        super().__init__(
            command_prefix=commands.when_mentioned,
            allowed_mentions=discord.AllowedMentions.none(),
            tree_cls=CorpusTree,
            **options,
        )
        self.settings = settings
        self.serving = Serving(settings, embedder=embedder, index_embedder_factory=index_embedder_factory)
        self.sync_global = sync_global
        #: seconds a result message's buttons stay live (an interaction token lasts 15 min).
        self.view_timeout = 14 * 60.0
        #: seconds between /reindex progress edits.
        self.progress_interval = 3.0

    async def setup_hook(self) -> None:
        await self.serving.start()
        for name in EXTENSIONS:
            await self.load_extension(name)
        await self.sync_commands()

    async def sync_commands(self) -> None:
        """Guild sync when DISCORD_GUILD_ID is set (instant; for development); global sync only
        when asked (`corpus-bot run --sync`), since Discord rate-limits it and it takes up to an
        hour to reach every client."""
        if self.settings.discord_guild_id:
            guild = discord.Object(id=self.settings.discord_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %s", len(synced), guild.id)
        if self.sync_global:
            synced = await self.tree.sync()
            log.info("synced %d commands globally", len(synced))

    async def on_ready(self) -> None:
        log.info(
            "logged in as %s (id %s) in %d servers, shards %s of %s",
            self.user,
            self.user.id if self.user else "?",
            len(self.guilds),
            ",".join(map(str, sorted(self.shards))),
            self.shard_count,
        )

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            self.serving.close()


def create_bot(settings: Settings, *, embedder=None, index_embedder_factory=None, **options) -> CorpusBot:
    """The configured bot, not yet logged in.

    embedder: the model for questions (default: loaded from settings.embedding_model in
    setup_hook, in an executor). index_embedder_factory: a picklable callable with no arguments
    that the /reindex process calls to make the embedder it indexes with (default: the process
    loads settings.embedding_model itself, only when a run has something to embed); tests pass
    their fake embedder's class. options: passed to commands.Bot (e.g. guild_ready_timeout=0.05
    in tests).
    """
    return CorpusBot(settings, embedder=embedder, index_embedder_factory=index_embedder_factory, **options)


# ------------------------------------------------------------------------------------ running


def check_token(token: str) -> str:
    """Catch the common mistakes before talking to Discord. Messages never include the token."""
    where = "copy .env.example to .env and set DISCORD_TOKEN to the token from the Developer Portal (your app > Bot > Reset Token)"
    if not token:
        raise click.ClickException(f"DISCORD_TOKEN is not set: {where}")
    if token.lower().startswith("bot "):
        raise click.ClickException("DISCORD_TOKEN must be the bare token, without the 'Bot ' prefix")
    if any(c.isspace() or c in "\"'" for c in token) or token.count(".") != 2:
        raise click.ClickException(
            "DISCORD_TOKEN does not look like a bot token (three parts separated by dots, no spaces or quotes); "
            "make sure it is the Bot token, not the application id or the OAuth2 client secret"
        )
    return token


def gateway_closed(exc: discord.ConnectionClosed, settings: Settings) -> str:
    """One line for a gateway close that discord.py does not reconnect after."""
    if exc.code == 4011 and settings.shard_count is None:  # the bot outgrew the count it started with
        return (
            "Discord requires more shards than it recommended when the bot started (gateway closed with 4011, "
            "sharding required): start the bot again"
        )
    if exc.code == 4011:
        return (
            f"Discord requires more shards than SHARD_COUNT={settings.shard_count} (gateway closed with 4011, "
            "sharding required): raise SHARD_COUNT in every process, or leave it empty to use Discord's recommended count"
        )
    if exc.code == 4010:
        return (
            f"Discord refused shard {exc.shard_id} (gateway closed with 4010, invalid shard): "
            "check SHARD_COUNT and SHARD_IDS"
        )
    return f"Discord closed the gateway connection with code {exc.code} and the bot cannot reconnect"


def run_bot(settings: Settings, *, sync_global: bool = False) -> None:
    """`corpus-bot run`: start the bot and block until Ctrl-C. Every known failure becomes one
    `Error: ...` line (exit 1), never a traceback, never the token."""
    from .logs import setup_logging

    token = check_token(settings.discord_token)
    setup_logging(token)
    bot = create_bot(settings, sync_global=sync_global)
    try:
        bot.run(token, log_handler=None)  # logging is already set up (with the redaction filter)
    except discord.LoginFailure:
        raise click.ClickException(
            "Discord rejected DISCORD_TOKEN (401 Unauthorized): reset the token in the Developer Portal "
            "(your app > Bot > Reset Token) and put the new one in .env"
        ) from None
    except discord.PrivilegedIntentsRequired:
        raise click.ClickException(
            "Discord refused the gateway intents; this bot needs no privileged intents"
        ) from None
    except discord.ConnectionClosed as exc:
        raise click.ClickException(gateway_closed(exc, settings)) from None
    except CorpusBotError as exc:
        raise click.ClickException(str(exc)) from None
    except sqlite3.DatabaseError as exc:
        raise click.ClickException(f"the index file cannot be used: {exc}") from None
    except discord.HTTPException as exc:
        raise click.ClickException(f"Discord answered {exc.status} while starting: {exc.text or exc}") from None
    except (OSError, discord.GatewayNotFound) as exc:  # aiohttp.ClientConnectorError is an OSError
        raise click.ClickException(f"cannot reach Discord: {exc}") from None
