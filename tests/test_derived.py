"""What the derived folders beside an index (the tantivy copy, the vector file) share: only large
indexes get them, an index that shrinks below the threshold loses them, and an evaluation set that
large is searched with them."""

import json

import pytest

from embeddings import derived, tantivy_index, vector_file
from embeddings.index import run_index

from .test_tantivy_index import change_corpus, generation

MODULES = pytest.mark.parametrize("module", [tantivy_index, vector_file], ids=["tantivy", "vector file"])


@MODULES
def test_small_indexes_have_no_copy_and_one_that_shrinks_loses_it(fake_settings, fake_embedder, monkeypatch, module):
    run_index(fake_settings)
    folder = module.folder_for(fake_settings.index_path)
    assert not folder.exists()

    monkeypatch.setattr(derived, "LARGE_INDEX", 1)
    change_corpus(fake_settings)
    run_index(fake_settings)
    assert folder.is_dir()
    monkeypatch.setattr(derived, "LARGE_INDEX", 10_000)
    target = fake_settings.corpus_dir / "002_19231adb1c3244eb.txt"
    target.write_text(target.read_text() + "\n\nOne more paragraph about the wombat census.\n")
    run_index(fake_settings)
    assert not folder.exists()


@MODULES
def test_eval_searches_a_large_set_the_way_a_large_corpus_is_searched(tmp_path, fake_embedder, monkeypatch, module):
    from .test_evaluate import invoke_eval

    monkeypatch.setattr(derived, "LARGE_INDEX", 1)
    data = json.loads(invoke_eval(tmp_path, "--mode", "keyword", "--json").output)
    assert data["mrr@10"] == 1.0  # the fixture's questions share their key words with the answer
    cached = next((tmp_path / "data" / "eval-cache").glob("*.sqlite3"))
    assert derived.read_tag(module.folder_for(cached)) == generation(cached)
