"""Shared fixtures: a deterministic fake embedder for fast unit tests, the real bundled model for
integration tests (loaded once per session), and corpora and settings built from them. Helpers
that tests import are in tests/helpers.py."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from embeddings.config import Settings
from tests.helpers import SHIPPED_CORPUS, FakeEmbedder, Server, use_embedder
from tests.postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)


@pytest.fixture
def fake_embedder(monkeypatch) -> FakeEmbedder:
    """A fake embedder that every `load_embedder()` call in the core returns."""
    fake = FakeEmbedder()
    use_embedder(monkeypatch, fake)
    return fake


@pytest.fixture
def corpus_copy(tmp_path) -> Path:
    """A writable copy of the shipped corpus."""
    dest = tmp_path / "corpus"
    shutil.copytree(SHIPPED_CORPUS, dest)
    for p in dest.iterdir():
        p.chmod(0o644)
    return dest


@pytest.fixture
def fake_settings(tmp_path, corpus_copy, fake_embedder) -> Settings:
    return Settings(
        corpus_dir=corpus_copy,
        index_path=tmp_path / "data" / "index.sqlite3",
        embedding_model=fake_embedder.name,
        weak_score=0.2,
    )


@pytest.fixture(scope="session")
def real_embedder():
    from embeddings.embedder import load_embedder

    return load_embedder()


@pytest.fixture(scope="session")
def shipped_index(tmp_path_factory, real_embedder) -> Settings:
    """The shipped corpus indexed once with the real bundled model (read-only for tests)."""
    from embeddings.index import run_index

    base = tmp_path_factory.mktemp("shipped")
    settings = replace(Settings.from_env({}), corpus_dir=SHIPPED_CORPUS, index_path=base / "index.sqlite3")
    run_index(settings, embedder=real_embedder)
    return settings


@pytest.fixture
def server():
    """A local HTTP server on 127.0.0.1 serving feeds and pages (tests.helpers.Server)."""
    s = Server()
    yield s
    s.close()
