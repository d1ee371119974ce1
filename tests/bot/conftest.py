"""Bot test fixtures; the helpers that bot tests import are in tests/bot/helpers.py."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from tests.bot.helpers import in_store


@pytest.fixture
def fake_index(request, fake_settings, fake_embedder):
    """The shipped corpus (writable copy) indexed with the fake embedder, in the SQLite file, or in
    a PostgreSQL database of its own when a test is parametrised with `both_stores("fake_index")`."""
    return in_store(request, fake_settings)


@pytest.fixture
def no_index(request, fake_settings):
    """Settings naming an index that does not exist yet: no file at index_path, or an empty
    PostgreSQL database when parametrised with `both_stores("no_index")`."""
    if getattr(request, "param", "sqlite") == "postgres":
        return replace(fake_settings, index_url=request.getfixturevalue("postgres_url"))
    return fake_settings


@pytest.fixture
def shipped_store(request, shipped_index, real_embedder):
    """The shipped corpus indexed with the real model: `shipped_index`, or the same corpus in a
    PostgreSQL database when parametrised with `both_stores("shipped_store")`."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return shipped_index
    return in_store(request, shipped_index, real_embedder)


@pytest.fixture
def restore_logging():
    """Put the root logger back as it was (tests that run run_bot reconfigure logging)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
