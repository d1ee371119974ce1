"""The vector file of large indexes: written by the index job, tagged with the snapshot it holds,
loaded where it lies (codes memory-mapped, float16 rows read on demand) only while it matches, SQLite otherwise; answers identical.

LARGE_INDEX is lowered so the shipped corpus (67 passages) counts as large, and PREFILTER_MIN_ROWS
so that its shard gets a prefilter."""

import numpy as np
import pytest

import embeddings.vectors as vectors_module
from embeddings import derived, vector_file
from embeddings.index import run_index

from .test_tantivy_index import GONE, change_corpus, generation, load, stats

QUESTIONS = ["Sebghatullah Selab", "who was killed in the attack", "floods and rain", "quokka"]


@pytest.fixture
def large(monkeypatch):
    monkeypatch.setattr("embeddings.derived.LARGE_INDEX", 1)
    monkeypatch.setattr(vectors_module, "PREFILTER_MIN_ROWS", 16)  # product quantization trains 16 centroids


def answers(idx, embedder) -> list:
    return [
        [(r.passage_id, round(r.score, 6)) for r in idx.search(q, embedder, k=8, mode=mode).results]
        for q in QUESTIONS
        for mode in ("vector", "hybrid", "keyword")
    ]


def from_file(idx) -> bool:
    return isinstance(idx.vectors.exact, vector_file.RowFile)


def test_a_large_index_loads_its_vectors_from_the_file_and_answers_as_from_sqlite(large, fake_settings, fake_embedder):
    """In every mode: hybrid and keyword rescore rows read from the file, sometimes none at all."""
    run_index(fake_settings)
    folder = vector_file.folder_for(fake_settings.index_path)
    assert derived.read_tag(folder) == generation(fake_settings.index_path)
    idx = load(fake_settings)
    assert from_file(idx)
    assert all(idx.vectors._refined), "questions without filters go through the prefilter"
    mapped = answers(idx, fake_embedder)
    idx.close()

    derived.write_tag(folder, "another state")
    idx = load(fake_settings)
    assert not from_file(idx)
    assert answers(idx, fake_embedder) == mapped
    assert mapped[0], "the question has answers"
    idx.close()


def test_an_unchanged_reindex_keeps_the_file_and_a_change_rewrites_it(large, fake_settings, fake_embedder):
    run_index(fake_settings)
    folder = vector_file.folder_for(fake_settings.index_path)
    inode = folder.stat().st_ino
    assert not run_index(fake_settings).warnings
    assert folder.stat().st_ino == inode

    change_corpus(fake_settings)
    run_index(fake_settings)
    assert folder.stat().st_ino != inode
    idx = load(fake_settings)
    assert from_file(idx)
    assert "quokka" in idx.search("a quokka near the checkpoint", fake_embedder, k=1).results[0].text
    assert all(r.article.key != GONE for q in QUESTIONS for r in idx.search(q, fake_embedder, k=10).results)
    idx.close()


def test_a_snapshot_keeps_its_mapped_vectors_after_a_reindex_replaces_the_file(large, fake_settings, fake_embedder):
    run_index(fake_settings)
    old = load(fake_settings)
    before = answers(old, fake_embedder)
    change_corpus(fake_settings)
    run_index(fake_settings)  # the folder old maps is deleted; its pages stay readable
    assert answers(old, fake_embedder) == before
    old.close()


def test_a_failed_write_is_a_warning_and_searches_load_from_sqlite(large, fake_settings, fake_embedder, monkeypatch):
    run_index(fake_settings)
    change_corpus(fake_settings)
    with monkeypatch.context() as patch:
        patch.setattr(vector_file, "_write", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
        report = run_index(fake_settings)
    assert any(path == "(vector file)" and "disk full" in text for path, text in report.warnings)
    assert "out of date: run `corpus-bot index`" in stats(fake_settings)["vectors_from"]  # what an admin sees
    idx = load(fake_settings)
    assert not from_file(idx)
    assert "quokka" in idx.search("a quokka near the checkpoint", fake_embedder, k=1).results[0].text
    idx.close()
    assert not run_index(fake_settings).warnings  # the next run writes it, though nothing changed
    assert from_file(load(fake_settings))
    assert stats(fake_settings)["vectors_from"] == "vector file"


@pytest.mark.parametrize("name", ["exact.npy", "codes-0.faiss", "prefilter-0.faiss", "ids.npy"])
def test_a_damaged_file_is_ignored_with_a_warning_and_written_again(large, fake_settings, fake_embedder, caplog, name):
    run_index(fake_settings)
    idx = load(fake_settings)
    expected = answers(idx, fake_embedder)
    idx.close()
    folder = vector_file.folder_for(fake_settings.index_path)
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])  # truncated
    idx = load(fake_settings)
    assert not from_file(idx)
    assert answers(idx, fake_embedder) == expected
    assert "cannot use" in caplog.text
    idx.close()
    # The next run writes it again, though nothing changed, and says why.
    assert [(what, text.split(" (")[0]) for what, text in run_index(fake_settings).warnings] == [
        ("(vector file)", "written again")
    ]
    assert from_file(load(fake_settings))


def test_a_file_from_before_prefilters_is_not_used_and_written_again(large, fake_settings, fake_embedder, caplog):
    """An index job of an older version left no prefilter (nor checksums): scanning every code at
    1M passages would quietly take four times as long, so the folder counts as out of date."""
    run_index(fake_settings)
    idx = load(fake_settings)
    expected = answers(idx, fake_embedder)
    idx.close()
    folder = vector_file.folder_for(fake_settings.index_path)
    (folder / "prefilter-0.faiss").unlink()
    (folder / derived.CHECKSUM_FILE).unlink()
    idx = load(fake_settings)
    assert not from_file(idx)
    assert "written by an older version" in caplog.text
    idx.close()
    assert run_index(fake_settings).warnings == [
        ("(vector file)", "written again (it has no checksums (written by an older version))")
    ]
    idx = load(fake_settings)
    assert from_file(idx) and all(idx.vectors._refined)
    assert answers(idx, fake_embedder) == expected
    idx.close()


def test_the_run_reports_writing_the_vector_file(large, fake_settings, fake_embedder):
    seen = []
    report = run_index(fake_settings, on_progress=lambda p: seen.append(p.describe()))
    writing = f"vector file: writing {report.passages_total} passages' vectors"
    assert writing in seen and seen[-1] != writing  # shown while it is written, then the run goes on to done


def test_a_load_racing_a_reindex_gets_every_file_from_one_copy(large, fake_settings, fake_embedder, monkeypatch):
    """A bot loading while a re-index swaps in a new folder must not mix the two copies."""
    run_index(fake_settings)
    idx = load(fake_settings)
    expected = answers(idx, fake_embedder)
    idx.close()
    folder = vector_file.folder_for(fake_settings.index_path)

    def build(tmp):  # a copy of the same shape and tag whose passage ids are in another order
        for f in folder.iterdir():
            (tmp / f.name).write_bytes(f.read_bytes())
        np.save(tmp / "ids.npy", np.load(tmp / "ids.npy")[::-1].copy())

    class SwapAfterOpening(vector_file.RowFile):
        def __init__(self, path):
            super().__init__(path)
            derived.replace(folder, build, generation(fake_settings.index_path))

    monkeypatch.setattr(vector_file, "RowFile", SwapAfterOpening)
    idx = load(fake_settings)
    # The copy it started on is deleted under it, so it loads from SQLite; never half of each copy.
    assert not from_file(idx)
    assert answers(idx, fake_embedder) == expected
    idx.close()


def test_the_int8_codes_decode_to_the_vectors_they_encode(large, fake_settings, fake_embedder):
    """VectorMatrix.approx (what hybrid search compares words with): the codes, from the file's
    memory-mapped shards or from memory, decode to within rounding of the float16 vectors."""
    run_index(fake_settings)
    rows = np.array([0, 5, 17, 66, 3])
    with_file = load(fake_settings)
    assert from_file(with_file)
    exact = with_file.vectors.get(rows)
    decoded = [with_file.vectors.approx(rows)]
    with_file.close()
    derived.write_tag(vector_file.folder_for(fake_settings.index_path), "another state")
    from_sqlite = load(fake_settings)
    assert not from_file(from_sqlite)
    decoded.append(from_sqlite.vectors.approx(rows))
    from_sqlite.close()
    for vectors in decoded:
        cosine = (vectors * exact).sum(axis=1) / np.linalg.norm(vectors, axis=1)
        assert (cosine > 0.999).all()
