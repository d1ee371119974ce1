"""The token vectors stored in the index for hybrid search (embeddings/word_vectors.py): written with
the passages, kept up to date by every run, given to an index from before them, replaced by a rebuild."""

import numpy as np

from embeddings import store
from embeddings.index import run_index
from embeddings.word_vectors import WordVectors


def stored(settings) -> WordVectors:
    with store.reading(settings.index_path) as conn:
        return WordVectors.load(conn, 256)


def write(settings, sql: str) -> None:
    conn = store.connect_for_writing(settings.index_path)
    try:
        conn.execute(sql)
    finally:
        conn.close()


def test_the_index_holds_a_vector_for_every_word_of_the_corpus(fake_settings, fake_embedder):
    run_index(fake_settings)
    words = ["selab", "faryab", "taliban", "gobbles"]  # "gobbles": only in a title
    vectors = stored(fake_settings).of(words + ["xyzzyq"], fake_embedder)
    assert np.allclose(vectors[:-1], fake_embedder.encode(words), atol=1e-3)  # float16 in the file
    assert not vectors[-1].any()  # not in the corpus: no vector


def test_a_reindex_adds_the_new_words_and_an_older_index_gets_them_all(fake_settings, fake_embedder):
    run_index(fake_settings)
    (fake_settings.corpus_dir / "quokka.txt").write_text(
        "Quokka sightings\n\nA quokka was seen near the Kunduz checkpoint on Tuesday.\n"
    )
    report = run_index(fake_settings)
    assert report.added and stored(fake_settings).of(["quokka"], fake_embedder).any()

    write(fake_settings, "DELETE FROM token_vectors")  # as written before the table existed
    assert len(stored(fake_settings)) == 0
    report = run_index(fake_settings)  # nothing changed in the corpus
    assert not report.added and not report.changed
    assert stored(fake_settings).of(["quokka", "selab"], fake_embedder).any(axis=1).all()
    assert len(stored(fake_settings)) > 100


def test_a_rebuild_replaces_the_token_vectors(fake_settings, fake_embedder):
    run_index(fake_settings)
    write(fake_settings, "UPDATE token_vectors SET vector = zeroblob(length(vector))")
    assert not stored(fake_settings).of(["selab"], fake_embedder).any()
    run_index(fake_settings, rebuild=True)
    assert stored(fake_settings).of(["selab"], fake_embedder).any()
