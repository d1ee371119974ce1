"""Bot test fixtures; the helpers that bot tests import are in tests/bot/helpers.py."""

from __future__ import annotations

import logging

import pytest

from embeddings.index import run_index


@pytest.fixture
def fake_index(fake_settings, fake_embedder):
    """The shipped corpus (writable copy) indexed with the fake embedder."""
    run_index(fake_settings)
    return fake_settings


@pytest.fixture
def restore_logging():
    """Put the root logger back as it was (tests that run run_bot reconfigure logging)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
