"""Who may do what: the /reindex admin check, the DM refusal, and the per-user /ask cooldown.

The checks raise app_commands errors; the tree's error handler (bot/app.py) turns each into one
friendly ephemeral reply.
"""

from __future__ import annotations

import discord
from discord import app_commands


class NotIndexAdmin(app_commands.CheckFailure):
    """The user has neither Manage Server nor a listed admin user id / role id."""


def is_index_admin(interaction: discord.Interaction) -> bool:
    settings = interaction.client.settings  # type: ignore[attr-defined]
    user = interaction.user
    if user.id in settings.admin_user_ids:
        return True
    perms = interaction.permissions  # the member's permissions in this channel, sent by Discord
    if perms.manage_guild or perms.administrator:
        return True
    roles = {role.id for role in getattr(user, "roles", ())}
    return bool(roles & settings.admin_role_ids)


def index_admin_only():
    """Runtime check for /reindex. `default_permissions(manage_guild=True)` only hides the command
    by default (server admins can change that in Integrations), so the bot checks again."""

    async def predicate(interaction: discord.Interaction) -> bool:
        if interaction.guild_id is None:
            raise app_commands.NoPrivateMessage()
        if not is_index_admin(interaction):
            raise NotIndexAdmin()
        return True

    return app_commands.check(predicate)


def _ask_cooldown(interaction: discord.Interaction) -> app_commands.Cooldown | None:
    settings = interaction.client.settings  # type: ignore[attr-defined]
    if settings.ask_cooldown_seconds <= 0:
        return None
    return app_commands.Cooldown(settings.ask_cooldown_rate, settings.ask_cooldown_seconds)


#: One cooldown, per user, shared by /ask and "Find sources" (both run a search); its rate and
#: period come from the bot's Settings (ASK_COOLDOWN_RATE per ASK_COOLDOWN_SECONDS).
ask_cooldown = app_commands.checks.dynamic_cooldown(_ask_cooldown, key=lambda i: i.user.id)
