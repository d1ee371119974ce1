"""The search contract both stores keep, at SearchIndex level: one suite run on an SQLite index
and on a PostgreSQL index built from the same corpus with the same embedder. The PostgreSQL index
runs twice: as it chooses (a filter matching few passages is scanned exactly), and with every
filtered search sent through the HNSW index, so both of its filter strategies keep the contract."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from embeddings.index import run_index as run_sqlite_index
from embeddings.search import Filters, SearchIndex

STORES = ["sqlite", "postgresql", "postgresql-hnsw-filters"]


@pytest.fixture(params=STORES)
def index(request, fake_settings, fake_embedder, monkeypatch):
    if request.param == "sqlite":
        run_sqlite_index(fake_settings, embedder=fake_embedder)
        idx = SearchIndex.load(fake_settings.index_path, model_name=fake_embedder.name, weak_score=0.2)
    else:
        pytest.importorskip("psycopg", reason="needs the postgres extra: pip install -e '.[postgres]'")
        from embeddings.postgres import search
        from embeddings.postgres.indexing import run_index

        if request.param == "postgresql-hnsw-filters":
            monkeypatch.setattr(search, "EXACT_BELOW", 0)
        url = request.getfixturevalue("postgres_url")
        run_index(fake_settings, url, embedder=fake_embedder)
        idx = search.load_search_index(url, model_name=fake_embedder.name, weak_score=0.2)
    yield idx
    idx.close()


def _shown(answer) -> list[tuple[str, int]]:
    return [(r.article.key, r.position) for r in answer.results]


def test_each_mode_finds_the_passage_that_answers(index, fake_embedder, fake_settings):
    for mode in ("vector", "hybrid", "keyword"):
        answer = index.search("Ahmed Shah Massoud anti-Taliban commander killed", fake_embedder, k=5, mode=mode)
        top = answer.results[0]
        assert "Ahmed Shah Massoud" in top.text, mode
        assert top.text in (fake_settings.corpus_dir / top.article.key).read_text()  # verbatim
        assert [r.rank for r in answer.results] == list(range(1, len(answer.results) + 1))
        if mode == "vector":
            assert all(a.score >= b.score for a, b in zip(answer.results, answer.results[1:]))


def test_source_and_date_filters_restrict_the_results(index, fake_embedder):
    for mode in ("vector", "hybrid", "keyword"):
        answer = index.search("Taliban", fake_embedder, filters=Filters(source="antiwar"), mode=mode)
        assert answer.results and {r.article.source for r in answer.results} == {"Antiwar.com"}, mode
        answer = index.search("Taliban", fake_embedder, filters=Filters(since=dt.date(2021, 8, 1)), mode=mode)
        assert answer.results and {r.article.published for r in answer.results} == {dt.date(2021, 8, 9)}, mode
        assert answer.excluded_undated == 3
    nothing = index.search("Taliban", fake_embedder, filters=Filters(source="no such paper"))
    assert nothing.results == []


def test_a_selective_filter_still_returns_k_results_when_k_exist(index, fake_embedder):
    """One article of nine passages passes: every page is full until its passages run out."""
    for mode in ("vector", "hybrid"):
        filters = Filters(source="antiwar")
        assert (
            len(index.search("Taliban capitals weekend", fake_embedder, k=9, filters=filters, mode=mode).results) == 9
        )
        seen = []
        for offset in range(0, 12, 4):
            page = index.search(
                "Taliban capitals weekend", fake_embedder, k=4, offset=offset, filters=filters, mode=mode
            )
            seen += [r.passage_id for r in page.results]
        assert len(seen) == len(set(seen)) == 9, mode


def test_the_first_page_shows_at_most_two_passages_of_an_article(index, fake_embedder):
    for mode in ("vector", "hybrid"):
        keys = [r.article.key for r in index.search("Taliban Kunduz", fake_embedder, k=5, mode=mode).results]
        assert len(keys) == 5 and max(keys.count(k) for k in keys) <= 2, mode


def test_context_returns_the_neighbouring_paragraphs_in_order(index, fake_embedder):
    hit = index.search("Ahmed Shah Massoud", fake_embedder).results[0]
    around = index.context(hit.passage_id)
    assert [r.position for r in around] == [hit.position - 1, hit.position, hit.position + 1]
    assert {r.article.key for r in around} == {hit.article.key}


def test_paging_reaches_every_passage_once(index, fake_embedder):
    seen = []
    for offset in range(0, index.passage_count + 20, 20):
        seen += [
            r.passage_id for r in index.search("Taliban", fake_embedder, k=20, offset=offset, mode="vector").results
        ]
    assert len(seen) == len(set(seen)) == index.passage_count


@pytest.fixture
def both(fake_settings, fake_embedder, postgres_url):
    """The same corpus in an SQLite index and a PostgreSQL index."""
    pytest.importorskip("psycopg", reason="needs the postgres extra: pip install -e '.[postgres]'")
    from embeddings.postgres.indexing import run_index
    from embeddings.postgres.search import load_search_index

    run_sqlite_index(fake_settings, embedder=fake_embedder)
    run_index(fake_settings, postgres_url, embedder=fake_embedder)
    sqlite = SearchIndex.load(fake_settings.index_path, model_name=fake_embedder.name, weak_score=0.2)
    postgres = load_search_index(postgres_url, model_name=fake_embedder.name, weak_score=0.2)
    yield sqlite, postgres
    sqlite.close()
    postgres.close()


QUESTIONS = ["Taliban Kunduz", "ceasefire talks", "Ahmed Shah Massoud", "provincial capitals fell", "sourdough"]


def test_the_stores_rank_the_same_passages_in_every_mode(both, fake_embedder):
    sqlite, postgres = both
    for mode in ("vector", "hybrid"):
        for question in QUESTIONS:
            want = sqlite.search(question, fake_embedder, k=10, mode=mode)
            got = postgres.search(question, fake_embedder, k=10, mode=mode)
            assert _shown(got) == _shown(want), (mode, question)


def test_a_postgres_index_holds_no_vectors_and_its_hnsw_search_equals_exact(both, fake_embedder):
    from embeddings.postgres.search import PostgresVectorSearch

    _, postgres = both
    vectors = postgres.vectors
    assert isinstance(vectors, PostgresVectorSearch)
    assert not [name for name, value in vars(vectors).items() if isinstance(value, np.ndarray) and value.ndim > 1]
    keep = np.isin(postgres.passage_article, [0, 2, 3])  # a filter keeps whole articles
    for question in QUESTIONS:
        query = fake_embedder.encode([question])[0]
        for mask in (None, keep):
            hnsw, found = vectors.search(query, 10, mask, exact=False)
            exact, wanted = vectors.search(query, 10, mask, exact=True)
            assert len(hnsw) == len(exact) == 10 and (mask is None or mask[hnsw].all())
            # The same cosines (passages of equal cosine may stand in for each other)
            assert np.allclose(np.sort(found @ query), np.sort(wanted @ query), atol=1e-6), question
        rows, cosine = vectors.top(query, 10)
        assert np.allclose(cosine, vectors.get(rows) @ query, atol=1e-6)
        finer = np.zeros(postgres.passage_count, bool)
        finer[::3] = True  # a mask that leaves out some passages of each article still gets k rows
        rows, _ = vectors.search(query, 10, finer)
        assert len(rows) == 10 and finer[rows].all()


def test_an_hnsw_answer_short_of_the_rows_asked_is_asked_again_exactly(both, fake_embedder, monkeypatch):
    """A filtered HNSW scan may stop before it finds the rows asked (hnsw.max_scan_tuples): the
    search then scans the filter's rows exactly, so a filter matching k passages gives k. Whether a
    real scan of this small graph stops short varies from build to build, so here the HNSW pass
    returns two rows; the exact pass is the server's."""
    from embeddings.postgres import search

    _, postgres = both
    monkeypatch.setattr(search, "EXACT_BELOW", 0)  # the filter goes through the HNSW index first
    read = postgres.vectors._read

    def hnsw_comes_back_short(sql, params, ef=None, **kwargs):
        rows, vectors = read(sql, params, ef, **kwargs)
        return (rows[:2], vectors[:2]) if ef is not None else (rows, vectors)

    monkeypatch.setattr(postgres.vectors, "_read", hnsw_comes_back_short)
    keep = np.zeros(postgres.passage_count, bool)
    keep[postgres.passage_article == 0] = True
    query = fake_embedder.encode(["Taliban"])[0]
    short, _ = postgres.vectors.search(query, 8, keep, exact=False)
    assert len(short) < keep.sum() == 8  # the HNSW pass alone comes back short
    rows, _ = postgres.vectors.search(query, 8, keep)
    assert sorted(rows) == list(np.nonzero(keep)[0])
