"""The contract both stores keep, through the CLI: the same commands give the same documented
shapes whether the index is an SQLite file (INDEX_PATH) or a PostgreSQL database (INDEX_URL).
Each test runs once per store; a store's own guarantees are tested in its own files."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bot.cli import cli
from tests.test_cli import ASK_KEYS, RESULT_KEYS, SOURCE_KEYS, STATS_KEYS
from tests.test_reliability_core import add_zebra_article

# What `stats` reports for where each store searches keywords and reads vectors from.
SEARCHED_WITH = {"sqlite": ("fts5", "sqlite"), "postgresql": ("postgresql full-text", "postgresql")}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, fake_settings):
    """Which store the CLI uses and where it is as `stats` shows it; the PostgreSQL URL carries a
    password (the test server trusts local connections, so any is accepted) that must not show."""
    if request.param == "sqlite":
        return "sqlite", {"INDEX_URL": ""}, str(fake_settings.index_path)
    pytest.importorskip("psycopg", reason="needs the postgres extra: pip install -e '.[postgres]'")
    from embeddings.postgres.store import shown

    url = request.getfixturevalue("postgres_url").replace("postgres:@", "postgres:s3cret@", 1)
    assert "s3cret" in url
    return "postgresql", {"INDEX_URL": url}, shown(url)


@pytest.fixture
def run(fake_settings, store):
    env = {
        "CORPUS_DIR": str(fake_settings.corpus_dir),
        "INDEX_PATH": str(fake_settings.index_path),
        "EMBEDDING_MODEL": fake_settings.embedding_model,
        "WEAK_SCORE": "0.2",
        **store[1],
    }

    def invoke(*args):
        result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
        assert "s3cret" not in result.output
        return result

    return invoke


def test_index_is_incremental_and_ask_quotes_passages_in_the_documented_shape(run):
    first = run("index")
    assert first.exit_code == 0, first.output
    assert "5 added, 0 changed, 0 removed, 0 unchanged, 0 skipped" in first.output
    again = json.loads(run("index", "--json").output)
    assert len(again["unchanged"]) == 5 and again["passages_embedded"] == 0
    answer = json.loads(run("ask", "Kunduz provincial council member bullets", "--json").output)
    assert set(answer) == ASK_KEYS and answer["results"]
    assert answer["query"] == "Kunduz provincial council member bullets"
    assert isinstance(answer["weak"], bool) and answer["excluded_undated"] == 0
    assert all(set(r) == RESULT_KEYS for r in answer["results"])
    top = answer["results"][0]
    assert "sound of bullets" in top["text"] and top["path"] == "001_d4691cda91f5b4eb.txt"
    assert top["date"] == "2021-06-20" and top["authors"] == ["Thomas Gibbons-Neff", "Najim Rahim"]
    assert 1 <= top["position"] <= top["article_passages"]


def test_sources_lists_every_article_with_its_metadata(run):
    run("index")
    data = json.loads(run("sources", "--json").output)
    assert set(data) == {"articles"}
    articles = {a["path"]: a for a in data["articles"]}
    assert len(articles) == 5 and all(set(a) == SOURCE_KEYS for a in articles.values())
    assert [a["path"] for a in data["articles"]] == sorted(articles)
    assert articles["001_d4691cda91f5b4eb.txt"]["published"] == "2021-06-20"
    assert articles["001_d4691cda91f5b4eb.txt"]["updated"] == "2021-08-06"
    assert articles["001_d4691cda91f5b4eb.txt"]["authors"] == ["Thomas Gibbons-Neff", "Najim Rahim"]
    assert articles["004_df801900fabe096f.txt"]["source"] == "Antiwar.com"
    assert articles["002_19231adb1c3244eb.txt"]["published"] is None
    text = run("sources").output
    assert "undated" in text and "· 001_d4691cda91f5b4eb.txt" in text


def test_stats_reports_the_index_in_the_documented_shape(run, store, fake_settings):
    name, _, where = store
    run("index")
    passages = sum(a["passages"] for a in json.loads(run("sources", "--json").output)["articles"])
    data = json.loads(run("stats", "--json").output)
    assert list(data) == list(STATS_KEYS)  # the documented keys, in the documented order
    assert data["articles"] == 5 and data["passages"] == passages > 25
    assert data["model"] == fake_settings.embedding_model and data["dimension"] == 256
    assert data["size_bytes"] > 0 and data["built"]
    assert (data["keyword_search"], data["vectors_from"]) == SEARCHED_WITH[name]
    assert data["damaged_vectors"] == []
    assert data["corpus_dir"] == str(fake_settings.corpus_dir) and data["index_path"] == where
    assert len(data["last_run"]["report"]["added"]) == 5 and data["last_run"]["seconds"] >= 0
    text = run("stats").output
    assert f"articles:  5\npassages:  {passages}\n" in text
    assert f"index:     {where} (" in text and f"corpus:    {fake_settings.corpus_dir}\n" in text
    assert f"keywords:  {SEARCHED_WITH[name][0]}\n" in text and "last run:" in text


def test_stats_and_sources_follow_a_new_article(run, fake_settings):
    run("index")
    before = json.loads(run("stats", "--json").output)
    add_zebra_article(fake_settings.corpus_dir)
    run("index")
    after = json.loads(run("stats", "--json").output)
    assert after["articles"] == before["articles"] + 1 and after["passages"] > before["passages"]
    assert after["last_run"]["report"]["added"] == ["zz_zebra.txt"]
    sources = json.loads(run("sources", "--json").output)["articles"]
    assert sources[-1]["path"] == "zz_zebra.txt" and sources[-1]["title"] == "Zebras on the Kunduz road"


def test_reading_commands_on_a_store_with_no_index_say_to_run_index_and_write_nothing(run, store, fake_settings):
    for command in (["stats"], ["sources"], ["ask", "anything"]):
        result = run(*command)
        assert result.exit_code == 1, (command, result.output)
        assert "run `corpus-bot index" in result.output and "Traceback" not in result.output
    if store[0] == "sqlite":
        assert not fake_settings.index_path.exists()
    else:  # no schema was made: the database is as the user gave it
        import psycopg

        with psycopg.connect(store[1]["INDEX_URL"]) as conn:
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0
