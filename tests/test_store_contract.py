"""The contract both stores keep, through the CLI: the same commands give the same documented
shapes whether the index is an SQLite file (INDEX_PATH) or a PostgreSQL database (INDEX_URL), and
the index job keeps the same guarantees (incremental by content hash, renames, duplicates, the
removal, empty-run and model guards, one run at a time). Each test runs once per store; a store's
own guarantees (killed runs, damaged files, URLs) are tested in its own files."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
from click.testing import CliRunner

from bot.cli import cli
from tests.test_cli import ASK_KEYS, RESULT_KEYS, SOURCE_KEYS, STATS_KEYS
from tests.test_index_removals import write_articles
from tests.test_reliability_core import add_zebra_article, assert_one_error_line

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

    def invoke(*args, **overrides):
        result = CliRunner().invoke(cli, list(args), env={**env, **overrides}, catch_exceptions=False)
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


# ------------------------------------------------------------------ the index job's guarantees

SHIPPED = sorted(
    ["000_84e6feabee5314c5.txt", "001_d4691cda91f5b4eb.txt", "002_19231adb1c3244eb.txt"]
    + ["003_67286731495c820e.txt", "004_df801900fabe096f.txt"]
)


def _paths(run) -> list[str]:
    return [a["path"] for a in json.loads(run("sources", "--json").output)["articles"]]


def test_an_edit_and_a_removal_are_the_only_work(run, fake_settings, fake_embedder):
    run("index")
    corpus = fake_settings.corpus_dir
    edited = corpus / SHIPPED[2]
    edited.write_text(edited.read_text() + "\n\nA zebra crossing appeared in Kunduz overnight, residents said.\n")
    (corpus / SHIPPED[4]).unlink()
    before = fake_embedder.texts_embedded
    report = json.loads(run("index", "--json").output)
    assert (report["changed"], report["removed"], report["added"]) == ([SHIPPED[2]], [SHIPPED[4]], [])
    assert report["unchanged"] == [SHIPPED[0], SHIPPED[1], SHIPPED[3]]
    # Only the new paragraph is embedded (and the model's probe text); the rest reuse their vectors.
    assert report["passages_embedded"] == 1 and report["passages_reused"] > 0
    assert fake_embedder.texts_embedded - before == report["passages_embedded"] + 1
    assert _paths(run) == [SHIPPED[0], SHIPPED[1], SHIPPED[2], SHIPPED[3]]
    found = json.loads(run("ask", "--json", "--mode", "keyword", "zebra crossing").output)["results"]
    assert found[0]["path"] == SHIPPED[2] and "zebra crossing" in found[0]["text"]
    again = json.loads(run("index", "--json").output)
    assert again["passages_embedded"] == 0 and len(again["unchanged"]) == 4


def test_a_moved_file_is_renamed_not_embedded(run, fake_settings):
    run("index")
    corpus = fake_settings.corpus_dir
    (corpus / "sub").mkdir()
    (corpus / SHIPPED[1]).rename(corpus / "sub" / "moved.txt")
    report = json.loads(run("index", "--json").output)
    assert report["renamed"] == [{"from": SHIPPED[1], "to": "sub/moved.txt"}]
    assert (report["added"], report["removed"], report["passages_embedded"]) == ([], [], 0)
    assert "sub/moved.txt" in _paths(run) and SHIPPED[1] not in _paths(run)


def test_identical_articles_are_indexed_once(run, fake_settings):
    corpus = fake_settings.corpus_dir
    (corpus / "zz_copy.txt").write_bytes((corpus / SHIPPED[0]).read_bytes())
    report = json.loads(run("index", "--json").output)
    assert {"path": "zz_copy.txt", "reason": f"duplicate of {SHIPPED[0]} (same text and metadata): indexed once"} in (
        report["skipped"]
    )
    assert report["articles_total"] == 5 and "zz_copy.txt" not in _paths(run)


def test_a_run_that_would_empty_the_index_is_refused_with_nothing_written(run, fake_settings):
    run("index")
    before = run("sources", "--json").output
    for path in fake_settings.corpus_dir.iterdir():
        path.unlink()
    for args in (["index"], ["index", "--allow-removals"]):
        refused = run(*args)
        assert refused.exit_code == 1
        assert_one_error_line(refused.output, "would leave the index empty")
    assert run("sources", "--json").output == before


def test_removing_most_of_the_index_is_refused_until_confirmed(run, fake_settings):
    write_articles(fake_settings.corpus_dir, range(12))  # 17 articles with the shipped five
    run("index")
    for i in range(12):
        (fake_settings.corpus_dir / f"article_{i:02d}.txt").unlink()
    for args in (["index"], ["index", "--rebuild"]):  # rebuilding from the wrong folder is the same mistake
        refused = run(*args)
        assert refused.exit_code == 1
        assert_one_error_line(refused.output, "would remove 12 of the 17 indexed articles", "--allow-removals")
        assert len(_paths(run)) == 17
    confirmed = json.loads(run("index", "--allow-removals", "--json").output)
    assert len(confirmed["removed"]) == 12 and _paths(run) == SHIPPED


def test_another_model_is_refused_unless_rebuild(run):
    run("index")
    refused = run("index", EMBEDDING_MODEL="another-model")
    assert refused.exit_code == 1
    assert_one_error_line(refused.output, "'fake-hash-embedder'", "'another-model'", "--rebuild")
    rebuilt = json.loads(run("index", "--rebuild", "--json", EMBEDDING_MODEL="another-model").output)
    assert rebuilt["changed"] == SHIPPED and rebuilt["passages_embedded"] == rebuilt["passages_total"]
    assert json.loads(run("stats", "--json", EMBEDDING_MODEL="another-model").output)["model"] == "another-model"


@contextmanager
def _another_run_holds_the_lock(store, fake_settings):
    """The lock an index run holds: a file lock beside the index file, an advisory lock on the
    database (taken from another connection, as from another host)."""
    if store[0] == "sqlite":
        from embeddings.index import index_lock

        with index_lock(fake_settings.index_path):
            yield
        return
    from embeddings.postgres import store as postgres_store

    url = store[1]["INDEX_URL"]
    with postgres_store.connect(url) as other_host, postgres_store.index_lock(other_host, url):
        yield


def test_one_index_run_at_a_time(run, store, fake_settings):
    with _another_run_holds_the_lock(store, fake_settings):
        busy = run("index")
        assert busy.exit_code == 1
        assert_one_error_line(busy.output, "another index run is")
        # Nothing was written: no index, or (the holder's connection made the schema) no article.
        listed = run("sources", "--json")
        assert listed.exit_code == 1 or json.loads(listed.output)["articles"] == []
    assert run("index").exit_code == 0  # the lock is released with its holder
    assert len(_paths(run)) == 5
