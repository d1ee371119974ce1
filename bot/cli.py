"""The `corpus-bot` console script: the core commands plus `run`, which starts the Discord bot."""

from __future__ import annotations

import click

from embeddings.cli import cli, settings_from


@cli.command("run")
@click.option(
    "--sync",
    is_flag=True,
    help="Also sync slash commands globally (rate-limited by Discord: only after changing them).",
)
@click.pass_context
def run_command(ctx, sync):
    """Start the Discord bot (needs DISCORD_TOKEN)."""
    from .app import run_bot  # discord is imported only when the bot actually runs

    run_bot(settings_from(ctx), sync_global=sync)


def main() -> None:
    cli(prog_name="corpus-bot")
