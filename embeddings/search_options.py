"""The search choices the CLI and the bot offer, without importing the search itself.

Kept apart from embeddings.search so that `corpus-bot --help` and option parsing need no numpy or
model code; embeddings.search re-exports every name.
"""

from __future__ import annotations

import re

from .errors import QueryError

DEFAULT_K = 5
MAX_K = 20
MODES = ("vector", "hybrid", "keyword")
# Why hybrid is the default: embeddings/search/hybrid.py and docs/retrieval.md.
DEFAULT_MODE = "hybrid"


def check_question_text(question: str) -> None:
    """Refuse, with a reason, a question the search would answer with arbitrary passages."""
    try:
        # Bytes that are not UTF-8 (a Latin-1 terminal, a Latin-1 line on stdin) reach Python as
        # lone surrogates, which the model's tokenizer rejects with a TypeError.
        question.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError(
            "the question is not valid UTF-8 text (check the terminal's or the input's encoding)"
        ) from None
    if question.strip() and not re.search(r"\w", question):
        # Punctuation or emoji alone still embed to a vector, close to nothing in particular.
        raise QueryError("the question has no words (only punctuation or symbols): ask it in words")
