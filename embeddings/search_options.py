"""The search choices the CLI and the bot offer, without importing the search itself.

Kept apart from embeddings.search so that `corpus-bot --help` and option parsing need no numpy or
model code; embeddings.search re-exports every name.
"""
from __future__ import annotations

DEFAULT_K = 5
MAX_K = 20
MODES = ("vector", "hybrid", "keyword")
# Why hybrid is the default: embeddings/search/hybrid.py and docs/retrieval.md.
DEFAULT_MODE = "hybrid"
