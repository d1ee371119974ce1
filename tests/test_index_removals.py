"""A run that would remove most of the index is refused until the removals are confirmed: a
CORPUS_DIR pointing at the wrong folder must not empty a good index (the CLI half; the /reindex
half is in tests/bot/test_reindex.py)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from embeddings import store
from embeddings.config import Settings
from embeddings.errors import RemovalsRefusedError
from embeddings.index import SAFE_REMOVALS, run_index
from tests.test_reliability_core import assert_one_error_line, invoke


def write_articles(folder: Path, names: range) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in names:
        (folder / f"article_{i:02d}.txt").write_text(
            f"Report number {i} from the river valley\n\nThe council of town {i} met on Monday to discuss "
            f"the bridge, the school and the harvest of year {i}.\n"
        )
    return folder


def file_bytes(index_path: Path) -> str:
    """The index file and its WAL, byte for byte."""
    digest = hashlib.sha256()
    for path in (index_path, Path(f"{index_path}-wal")):
        digest.update(path.read_bytes() if path.exists() else b"-")
    return digest.hexdigest()


def settings_for(tmp_path, fake_embedder, corpus: str = "corpus", index: str = "index.sqlite3") -> Settings:
    return Settings(
        corpus_dir=tmp_path / corpus, index_path=tmp_path / "data" / index, embedding_model=fake_embedder.name
    )


@pytest.fixture
def sixteen(tmp_path, fake_embedder) -> Settings:
    """An index of 16 articles; the folder `wrong` holds 2 others."""
    settings = settings_for(tmp_path, fake_embedder)
    write_articles(settings.corpus_dir, range(16))
    run_index(settings)
    write_articles(tmp_path / "wrong", range(50, 52))
    return settings


def articles(settings) -> int:
    with store.reading(settings.index_path) as conn:
        return conn.execute("SELECT COUNT(*) FROM articles").fetchone()[0]


def test_a_wrong_corpus_folder_is_refused_with_the_counts_and_the_flag(sixteen, tmp_path, fake_embedder):
    wrong = replace(sixteen, corpus_dir=tmp_path / "wrong")
    before, embedded = file_bytes(sixteen.index_path), fake_embedder.texts_embedded
    for args in (["index"], ["index", "--rebuild"]):  # a rebuild of the wrong folder is the same mistake
        result = invoke(wrong, *args)
        assert result.exit_code == 1, result.output
        line = assert_one_error_line(result.output)
        assert line == (
            f"Error: this run would remove 16 of the 16 indexed articles ({wrong.corpus_dir} has 2: is CORPUS_DIR "
            "the right folder?); nothing was written. If they should go, run again with --allow-removals"
        )
        assert file_bytes(sixteen.index_path) == before  # not a byte written
        assert fake_embedder.texts_embedded == embedded  # refused before anything was embedded

    result = invoke(wrong, "index", "--allow-removals")
    assert result.exit_code == 0, result.output
    assert "\n2 added, 0 changed, 16 removed, 0 unchanged" in result.output
    assert articles(sixteen) == 2


def test_the_limit_is_more_than_half_and_more_than_five(tmp_path, fake_embedder):
    settings = settings_for(tmp_path, fake_embedder)
    folder = write_articles(settings.corpus_dir, range(12))
    run_index(settings)

    def remove(names):
        for i in names:
            (folder / f"article_{i:02d}.txt").unlink()

    remove(range(6))  # 6 of 12: exactly half is allowed
    assert len(run_index(settings).removed) == 6
    write_articles(folder, range(6))
    run_index(settings)
    remove(range(7))  # 7 of 12: more than half
    with pytest.raises(RemovalsRefusedError) as refused:
        run_index(settings)
    assert (refused.value.removing, refused.value.indexed, refused.value.found) == (7, 12, 5)
    assert articles(settings) == 12
    assert len(run_index(settings, allow_removals=True).removed) == 7

    # A small index may lose most of its articles: SAFE_REMOVALS of SAFE_REMOVALS + 1 go quietly.
    small = settings_for(tmp_path, fake_embedder, "small", "small.sqlite3")
    write_articles(small.corpus_dir, range(SAFE_REMOVALS + 1))
    run_index(small)
    for i in range(SAFE_REMOVALS):
        (small.corpus_dir / f"article_{i:02d}.txt").unlink()
    assert len(run_index(small).removed) == SAFE_REMOVALS
