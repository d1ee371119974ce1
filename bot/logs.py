"""Logging for `corpus-bot run`: discord.py's own set-up, and a filter that keeps secrets out.

discord.py does not log the token at INFO; the filter is the second line of defence for anything
else that might (an exception message, a third-party library, a debug line someone adds later).
It sits on the handlers, so it sees every record that is written, whichever logger it came from.
"""

from __future__ import annotations

import logging
import sys

import discord

REDACTED = "[redacted]"


class RedactSecrets(logging.Filter):
    """Replace each secret in a record's message and traceback text with [redacted]."""

    def __init__(self, *secrets: str) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s and len(s) >= 8)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info:
            # Keep only the redacted text: a formatter may format exc_info again itself and ignore
            # exc_text (discord.py's colour formatter, used on a terminal, does: it printed the raw
            # traceback). The text is kept on the record, since formatters may clear exc_text.
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.redacted_exc_text = self.redact(text)
            record.exc_info = None
        if getattr(record, "redacted_exc_text", None):
            record.exc_text = record.redacted_exc_text
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def install_redaction(*secrets: str, logger: logging.Logger | None = None) -> RedactSecrets:
    """Add one RedactSecrets filter to every handler of logger (the root logger by default)."""
    flt = RedactSecrets(*secrets)
    for handler in (logger or logging.getLogger()).handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactSecrets)]:
            handler.removeFilter(old)
        handler.addFilter(flt)
    return flt


def setup_logging(token: str) -> None:
    """INFO logs to stderr in discord.py's format, with the token redacted."""
    root = logging.getLogger()
    # The CLI group installs a plain WARNING handler (logging.basicConfig); replace it, or every
    # warning would be printed twice.
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler.stream in (sys.stderr, sys.__stderr__):
            root.removeHandler(handler)
    discord.utils.setup_logging(level=logging.INFO, root=True)
    install_redaction(token)
