"""The tantivy copy of the keyword index that large indexes search with: built by the index job,
tagged with the snapshot it holds, used only while it matches, FTS5 otherwise.

LARGE_INDEX is lowered so the shipped corpus (67 passages) counts as large."""

import json
import re
import shutil
import sqlite3

import pytest
from click.testing import CliRunner

from embeddings import derived, store, tantivy_index
from embeddings.cli import cli
from embeddings.errors import IndexOutdatedError, QueryError
from embeddings.index import run_index
from embeddings.search import SearchIndex

from .test_search import HOSTILE_QUESTIONS, assert_keyword_side_adds_up_each_words_bm25_times_its_weight

GONE = "004_df801900fabe096f.txt"


@pytest.fixture
def large(monkeypatch):
    monkeypatch.setattr("embeddings.derived.LARGE_INDEX", 1)


def load(settings):
    return SearchIndex.load(settings.index_path, model_name=settings.embedding_model, weak_score=0.2)


def generation(index_path) -> str:
    with store.reading(index_path) as conn:
        return store.read_meta(conn)["generation"]


def fts5_keyword(idx, question, limit=1000):
    engine, idx.tantivy = idx.tantivy, None
    try:
        return idx.keyword_hits(question, limit=limit)
    finally:
        idx.tantivy = engine


def stats(settings) -> dict:
    """`corpus-bot stats --json`: the admin's view of which engine answers keyword searches."""
    result = CliRunner().invoke(
        cli,
        ["stats", "--json", "--index", str(settings.index_path)],
        env={"EMBEDDING_MODEL": settings.embedding_model},
        catch_exceptions=False,
    )
    return json.loads(result.output)


def change_corpus(settings) -> None:
    target = settings.corpus_dir / "002_19231adb1c3244eb.txt"
    target.write_text(target.read_text() + "\n\nA quokka was seen near the Kunduz checkpoint on Tuesday morning.\n")
    (settings.corpus_dir / GONE).unlink()


def test_a_large_index_searches_keywords_with_a_tantivy_copy_of_the_same_passages(large, fake_settings, fake_embedder):
    run_index(fake_settings)
    assert derived.read_tag(tantivy_index.folder_for(fake_settings.index_path)) == generation(fake_settings.index_path)
    idx = load(fake_settings)
    assert idx.tantivy is not None
    for question in ("Sebghatullah Selab", "Faryab province governor", "Kunduz airport", "Gobbles"):
        rows, scores = idx.keyword_hits(question)
        fts_rows, _ = fts5_keyword(idx, question)
        # The same passages match (its BM25 differs a little from FTS5's, so the order may too).
        assert set(rows) == set(fts_rows), question
        assert list(scores) == sorted(scores, reverse=True)
    top = idx.search("Sebghatullah Selab", fake_embedder, mode="keyword").results[0]
    assert "Sebghatullah Selab" in top.text
    titled = idx.search("Gobbles", fake_embedder, mode="keyword").results  # the title, as context
    assert titled and {r.article.title for r in titled} == {
        "Taliban Offensive Gobbles Up Territory in Northern Afghanistan"
    }
    idx.close()


def test_tantivy_weights_each_words_score_and_knows_its_idf(large, fake_settings, fake_embedder):
    """What hybrid search asks of the keyword engine, the same from tantivy as from FTS5: each word's
    BM25 scaled by its weight, and the question's idf sum (here tantivy's own idf)."""
    import numpy as np

    run_index(fake_settings)
    idx = load(fake_settings)
    assert idx.tantivy is not None
    assert_keyword_side_adds_up_each_words_bm25_times_its_weight(idx)
    n, df = idx.passage_count, len(idx.keyword_hits("Selab")[0])
    assert idx.idf_sum(["Selab", "xyzzyq"]) == pytest.approx(np.log(1 + (n - df + 0.5) / (df + 0.5)), rel=1e-6)
    # Hybrid through tantivy finds what it finds through FTS5 at the top.
    question = "Sebghatullah Selab deputy Faryab"
    top = idx.search(question, fake_embedder, mode="hybrid").results[0].passage_id
    engine, idx.tantivy = idx.tantivy, None
    assert idx.search(question, fake_embedder, mode="hybrid").results[0].passage_id == top
    idx.tantivy = engine
    idx.close()


def test_filters_apply_to_the_tantivy_keyword_hits(large, fake_settings, fake_embedder):
    from embeddings.search import Filters

    run_index(fake_settings)
    idx = load(fake_settings)
    every = idx.search("Taliban", fake_embedder, mode="keyword", k=20).results
    assert {r.article.source for r in every} != {"Antiwar.com"}
    filtered = idx.search("Taliban", fake_embedder, mode="keyword", k=20, filters=Filters(source="antiwar")).results
    assert filtered and {r.article.source for r in filtered} == {"Antiwar.com"}
    idx.close()


@pytest.mark.parametrize("question", HOSTILE_QUESTIONS)
def test_words_typed_by_users_never_reach_tantivy_as_syntax(large, fake_settings, fake_embedder, question):
    run_index(fake_settings)
    idx = load(fake_settings)
    if re.search(r"\w", question):
        assert isinstance(idx.search(question, fake_embedder, mode="hybrid").results, list)
    else:  # nothing to search for: refused before any engine sees it
        with pytest.raises(QueryError, match="no words"):
            idx.search(question, fake_embedder, mode="hybrid")
    idx.close()


def copy_names(settings) -> list[str]:
    return sorted(p.name for p in settings.index_path.parent.iterdir() if ".tantivy" in p.name)


def assert_copy_holds_the_change(settings, embedder) -> None:
    assert derived.read_tag(tantivy_index.folder_for(settings.index_path)) == generation(settings.index_path)
    idx = load(settings)
    assert idx.tantivy is not None
    assert "quokka" in idx.search("quokka", embedder, mode="keyword").results[0].text
    removed = idx.search("Sheberghan Taloqan", embedder, mode="keyword").results
    assert removed and all(r.article.key != GONE for r in removed)
    for question in ("Sebghatullah Selab", "Faryab province governor", "Kunduz airport", "quokka"):
        assert set(idx.keyword_hits(question)[0]) == set(fts5_keyword(idx, question)[0]), question
    idx.close()
    assert copy_names(settings) == [tantivy_index.folder_for(settings.index_path).name]


def test_an_unchanged_reindex_keeps_the_copy_and_a_small_change_updates_it_in_place(
    large, fake_settings, fake_embedder, monkeypatch
):
    monkeypatch.setattr(tantivy_index, "MAX_UPDATE_SHARE", 1.0)  # the shipped corpus is small: any change is "large"
    run_index(fake_settings)
    tag = generation(fake_settings.index_path)
    folder = tantivy_index.folder_for(fake_settings.index_path)
    inode = folder.stat().st_ino

    run_index(fake_settings)  # nothing changed: same generation, same folder
    assert generation(fake_settings.index_path) == tag and folder.stat().st_ino == inode

    change_corpus(fake_settings)
    run_index(fake_settings)
    assert generation(fake_settings.index_path) != tag
    assert folder.stat().st_ino == inode  # updated, not rebuilt
    assert_copy_holds_the_change(fake_settings, fake_embedder)


def test_a_large_change_builds_a_new_copy(large, fake_settings, fake_embedder, monkeypatch):
    monkeypatch.setattr(tantivy_index, "MAX_UPDATE_SHARE", 0.0)
    run_index(fake_settings)
    inode = tantivy_index.folder_for(fake_settings.index_path).stat().st_ino
    change_corpus(fake_settings)
    run_index(fake_settings)
    assert tantivy_index.folder_for(fake_settings.index_path).stat().st_ino != inode
    assert_copy_holds_the_change(fake_settings, fake_embedder)


def test_a_snapshot_keeps_searching_its_own_copy_after_a_reindex_replaces_it(large, fake_settings, fake_embedder):
    run_index(fake_settings)
    old = load(fake_settings)
    change_corpus(fake_settings)
    run_index(fake_settings)
    # The old snapshot (a bot between a re-index and its reload) still answers from its state.
    hits = old.search("Sheberghan Taloqan", fake_embedder, mode="keyword").results
    assert any(r.article.key == GONE for r in hits)
    assert not old.search("quokka", fake_embedder, mode="keyword").results
    old.close()


def test_a_stale_copy_is_not_used_and_fts5_answers(large, fake_settings, fake_embedder, monkeypatch):
    run_index(fake_settings)
    assert stats(fake_settings)["keyword_search"] == "tantivy"
    change_corpus(fake_settings)
    with monkeypatch.context() as patch:
        patch.setattr(tantivy_index, "_build", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
        report = run_index(fake_settings)
    # The run succeeds (the passages and vectors are committed) and says what it could not do.
    assert any(path == "(keyword index)" and "disk full" in text for path, text in report.warnings)
    assert derived.read_tag(tantivy_index.folder_for(fake_settings.index_path)) != generation(fake_settings.index_path)
    assert "out of date: run `corpus-bot index`" in stats(fake_settings)["keyword_search"]
    idx = load(fake_settings)
    assert idx.tantivy is None
    assert "quokka" in idx.search("quokka", fake_embedder, mode="keyword").results[0].text
    idx.close()

    # The next run builds it, though nothing in the corpus changed since.
    assert not run_index(fake_settings).warnings
    assert derived.read_tag(tantivy_index.folder_for(fake_settings.index_path)) == generation(fake_settings.index_path)


def test_an_unreadable_copy_means_fts5_and_the_next_run_rebuilds_it(large, fake_settings, fake_embedder):
    run_index(fake_settings)
    folder = tantivy_index.folder_for(fake_settings.index_path)
    for path in folder.iterdir():
        if path.name != derived.TAG_FILE:
            path.unlink() if path.is_file() else shutil.rmtree(path)
    (folder / "meta.json").write_text("not json")
    idx = load(fake_settings)
    assert idx.tantivy is None
    assert idx.search("Sebghatullah Selab", fake_embedder, mode="keyword").results
    idx.close()
    run_index(fake_settings)
    idx = load(fake_settings)
    assert idx.tantivy is not None
    idx.close()


def test_an_update_that_fails_falls_back_to_a_new_copy(large, fake_settings, fake_embedder, monkeypatch):
    monkeypatch.setattr(tantivy_index, "MAX_UPDATE_SHARE", 1.0)
    run_index(fake_settings)
    inode = tantivy_index.folder_for(fake_settings.index_path).stat().st_ino
    monkeypatch.setattr(tantivy_index, "_update", lambda *a: (_ for _ in ()).throw(OSError("segment unreadable")))
    change_corpus(fake_settings)
    assert not run_index(fake_settings).warnings
    assert tantivy_index.folder_for(fake_settings.index_path).stat().st_ino != inode
    assert_copy_holds_the_change(fake_settings, fake_embedder)


def test_an_index_from_before_authors_were_keywords_is_migrated_and_its_copy_rebuilt(
    large, fake_settings, fake_embedder, monkeypatch
):
    """Migration 6 (run by the index's owner: the bot at start, or `corpus-bot index`) puts the
    authors into the keyword context of an existing index and changes its generation: the tantivy
    copy made from the old context is not used (FTS5 answers, and finds the author) until the next
    index run rebuilds it."""

    old_context = "trim(coalesce(a.title, '') || ' ' || coalesce(a.source, ''))"
    with monkeypatch.context() as old:  # the schema, and the copy, as they were before migration 6
        old.setattr(store, "PASSAGE_CONTEXT", old_context)
        run_index(fake_settings)
        conn = sqlite3.connect(fake_settings.index_path)  # the later migrations undone
        with conn:
            conn.execute("DROP TRIGGER passages_fts_insert")
            conn.execute(f"""CREATE TRIGGER passages_fts_insert AFTER INSERT ON passages BEGIN
                INSERT INTO passage_fts(rowid, text, context) SELECT new.id, new.text, {old_context}
                FROM articles a WHERE a.id = new.article_id; END""")
            conn.execute("DELETE FROM passage_fts")
            conn.execute(
                f"INSERT INTO passage_fts(rowid, text, context) SELECT p.id, p.text, {old_context} "
                "FROM passages p JOIN articles a ON a.id = p.article_id"
            )
            conn.execute("DROP INDEX passages_embedded_hash")
            conn.execute("ALTER TABLE passages DROP COLUMN embedded_hash")
            conn.execute("DROP TABLE weak_questions")
            conn.execute("PRAGMA user_version = 5")
        conn.close()
        old.setattr(store, "SCHEMA_VERSION", 5)
        with store.reading(fake_settings.index_path) as conn:
            assert conn.execute("SELECT count(*) FROM passage_fts WHERE passage_fts MATCH 'ditz'").fetchone()[0] == 0
        before = generation(fake_settings.index_path)
        assert derived.read_tag(tantivy_index.folder_for(fake_settings.index_path)) == before

    with pytest.raises(IndexOutdatedError):  # reading never migrates
        load(fake_settings)
    assert store.upgrade(fake_settings.index_path)  # what the bot does at start
    idx = load(fake_settings)
    assert generation(fake_settings.index_path) != before and idx.tantivy is None
    assert stats(fake_settings)["keyword_search"].startswith("fts5 (the tantivy copy is missing or out of date")
    found = idx.search("Jason Ditz", fake_embedder, mode="keyword", k=20).results
    assert len(found) == 9 and {r.article.key for r in found} == {GONE}
    idx.close()

    run_index(fake_settings)  # nothing changed in the corpus; the copy is rebuilt all the same
    assert stats(fake_settings)["keyword_search"] == "tantivy"
    idx = load(fake_settings)
    assert idx.tantivy is not None
    assert {r.article.key for r in idx.search("Jason Ditz", fake_embedder, mode="keyword", k=20).results} == {GONE}
    idx.close()
