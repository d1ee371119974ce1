"""`corpus-bot index --from FILE --index postgresql://...`: an index file moved into PostgreSQL
without embedding anything, in one transaction, the file left as it was."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid

import pytest
from click.testing import CliRunner

from bot.cli import cli
from embeddings.errors import IndexBusyError
from embeddings.index import run_index as run_sqlite_index
from tests.test_reliability_core import add_zebra_article, env_for, harness

psycopg = pytest.importorskip("psycopg", reason="needs the postgres extra: pip install -e '.[postgres]'")
from embeddings.postgres import store  # noqa: E402 (needs psycopg)
from embeddings.postgres.copy import copy_index  # noqa: E402
from embeddings.postgres.indexing import run_index  # noqa: E402

QUESTIONS = ["ceasefire talks in Gaza", "what happened in kunduz", "Taliban attack on the council"]


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _keys(url: str) -> set[str]:
    with store.connect(url) as conn:
        return {key for (key,) in conn.execute("SELECT key FROM articles")}


def _invoke(settings, *args, **env):
    base = {
        "CORPUS_DIR": str(settings.corpus_dir),
        "INDEX_PATH": str(settings.index_path),
        "EMBEDDING_MODEL": settings.embedding_model,
        "WEAK_SCORE": "0.2",
        "INDEX_URL": "",
    }
    return CliRunner().invoke(cli, list(args), env={**base, **env}, catch_exceptions=False)


def test_a_copy_loads_no_model_leaves_the_file_unchanged_and_answers_as_the_file(
    fake_settings, fake_embedder, postgres_url, monkeypatch
):
    run_sqlite_index(fake_settings, embedder=fake_embedder)
    source = fake_settings.index_path
    before = _sha256(source)
    with monkeypatch.context() as patch:
        for module in ("embeddings.embedder", "embeddings.index", "embeddings.query_model"):
            patch.setattr(f"{module}.load_embedder", lambda *_, **__: pytest.fail("a model was loaded"))
        copied = _invoke(fake_settings, "index", "--from", str(source), "--index", postgres_url, "--json")
    assert copied.exit_code == 0, copied.output
    report = json.loads(copied.output)
    assert report["copied_from"] == str(source) and report["passages_embedded"] == 0
    assert len(report["added"]) == report["articles_total"] == 5 and report["passages_total"] > 0
    assert _sha256(source) == before and not source.with_name(source.name + "-wal").exists()

    for question in QUESTIONS:  # the same passages, in the same order, with the same scores
        for mode in ("vector", "keyword", "hybrid"):
            from_file = _invoke(fake_settings, "ask", "--json", "--mode", mode, question)
            from_postgres = _invoke(fake_settings, "ask", "--json", "--mode", mode, "--index", postgres_url, question)
            want, got = json.loads(from_file.output)["results"], json.loads(from_postgres.output)["results"]
            assert want and [(r["path"], r["text"]) for r in got] == [(r["path"], r["text"]) for r in want], (
                question,
                mode,
            )

    again = run_index(fake_settings, postgres_url, embedder=fake_embedder)
    assert again.passages_embedded == 0 and len(again.unchanged) == 5 and not again.added and not again.changed


def test_the_copy_holds_what_indexing_the_corpus_into_postgresql_writes(
    fake_settings, fake_embedder, postgres_url, postgres_server
):
    """Rows written by COPY match the index job's row by row: vectors, content and embedded hashes,
    keyword documents and their word counts (which BM25 reads), word vectors and the model's identity."""
    run_sqlite_index(fake_settings, embedder=fake_embedder)
    copy_index(fake_settings, fake_settings.index_path, postgres_url)
    name = f"built_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.get_uri(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    built = postgres_server.get_uri(database=name)
    try:
        run_index(fake_settings, built, embedder=fake_embedder)
        rows = (
            "SELECT a.key, a.file, a.content_hash, a.title, a.authors, a.published, p.position, p.text, "
            "p.embedded_hash, p.embedding::text, p.search::text, p.text_words, p.context_words "
            "FROM passages p JOIN articles a ON a.id = p.article_id ORDER BY a.key, p.position"
        )
        tokens = "SELECT token, vector FROM token_vectors ORDER BY token"
        with store.connect(postgres_url) as copied, store.connect(built) as indexed:
            assert copied.execute(rows).fetchall() == indexed.execute(rows).fetchall()
            assert copied.execute(tokens).fetchall() == indexed.execute(tokens).fetchall()
            copied_meta, indexed_meta = store.read_meta(copied), store.read_meta(indexed)
            for key in ("model", "dimension", "probe_vector", "model_hash"):
                assert copied_meta.get(key) == indexed_meta.get(key), key
            indexes = "SELECT indexname FROM pg_indexes WHERE tablename = 'passages' ORDER BY 1"
            assert copied.execute(indexes).fetchall() == indexed.execute(indexes).fetchall()
            runs = [r[0] for r in copied.execute("SELECT report FROM index_runs ORDER BY id")]
            assert len(runs) == 2 and runs[-1]["copied_from"] == str(fake_settings.index_path)
    finally:
        with psycopg.connect(postgres_server.get_uri(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_target_holding_an_index_is_refused_unless_rebuild_replaces_it(fake_settings, fake_embedder, postgres_url):
    run_sqlite_index(fake_settings, embedder=fake_embedder)
    old = next(fake_settings.corpus_dir.glob("*.txt"))
    add_zebra_article(fake_settings.corpus_dir)
    run_index(fake_settings, postgres_url, embedder=fake_embedder)  # the target: 6 articles
    held = _keys(postgres_url)
    refused = _invoke(fake_settings, "index", "--from", str(fake_settings.index_path), "--index", postgres_url)
    assert refused.exit_code == 1 and refused.output.count("\n") == 1, refused.output
    assert "already holds 6 articles" in refused.output and "--rebuild" in refused.output
    assert _keys(postgres_url) == held

    replaced = _invoke(
        fake_settings, "index", "--from", str(fake_settings.index_path), "--index", postgres_url, "--rebuild"
    )
    assert replaced.exit_code == 0, replaced.output
    assert "copying: 5 articles" in replaced.stderr and "indexing: building the search indexes" in replaced.stderr
    assert replaced.stdout.startswith(f"copied from {fake_settings.index_path} (no model loaded)\n5 added, 0 changed")
    assert _keys(postgres_url) == held - {"zz_zebra.txt"} and old.name in held


def test_another_model_in_the_target_or_in_the_settings_is_refused(fake_settings, fake_embedder, postgres_url):
    from dataclasses import replace

    run_sqlite_index(fake_settings, embedder=fake_embedder)
    with pytest.raises(Exception, match="EMBEDDING_MODEL=fake-hash-embedder"):
        copy_index(replace(fake_settings, embedding_model="another-model"), fake_settings.index_path, postgres_url)
    with store.connect(postgres_url) as conn:  # a target written with another model
        conn.execute("INSERT INTO index_meta VALUES ('model', 'another-model')")
        conn.execute(
            "INSERT INTO articles(key, file, content_hash, passage_count, indexed_at) VALUES ('x', 'x', 'h', 0, 'now')"
        )
    with pytest.raises(Exception, match="embedded with 'another-model'"):
        copy_index(fake_settings, fake_settings.index_path, postgres_url)
    assert _keys(postgres_url) == {"x"}


def test_bad_input_is_one_line_and_writes_nothing(fake_settings, fake_embedder, postgres_url, tmp_path):
    run_sqlite_index(fake_settings, embedder=fake_embedder)
    foreign = tmp_path / "photos.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
    text = tmp_path / "notes.sqlite3"
    text.write_text("not a database\n")
    cases = {
        "no index file at": ["--from", str(tmp_path / "missing.sqlite3"), "--index", postgres_url],
        "photos.db is not a corpus-bot index": ["--from", str(foreign), "--index", postgres_url],
        "notes.sqlite3 is not a corpus-bot index": ["--from", str(text), "--index", postgres_url],
        "not a PostgreSQL URL": ["--from", postgres_url, "--index", postgres_url],
        "give --index postgresql://": ["--from", str(fake_settings.index_path)],
    }
    foreign_bytes = foreign.read_bytes()
    for expected, args in cases.items():
        result = _invoke(fake_settings, "index", *args)
        assert result.exit_code == 1 and result.output.count("\n") == 1, (args, result.output)
        assert expected in result.output, (args, result.output)
    assert foreign.read_bytes() == foreign_bytes
    assert _keys(postgres_url) == set()


def test_damaged_vectors_are_not_copied_and_the_next_run_embeds_their_file(fake_settings, fake_embedder, postgres_url):
    run_sqlite_index(fake_settings, embedder=fake_embedder)
    with sqlite3.connect(fake_settings.index_path) as conn:  # one article's blob cut short
        key, article_id = conn.execute("SELECT key, id FROM articles ORDER BY key LIMIT 1").fetchone()
        conn.execute("UPDATE article_vectors SET vectors = substr(vectors, 1, 100) WHERE article_id = ?", (article_id,))
    conn.close()
    report = copy_index(fake_settings, fake_settings.index_path, postgres_url)
    assert key not in report.added and len(report.added) == 4
    assert [path for path, _ in report.warnings] == [key] and "not copied" in report.warnings[0][1]
    assert key not in _keys(postgres_url)
    following = run_index(fake_settings, postgres_url, embedder=fake_embedder)
    assert following.added == [key] and following.passages_embedded > 0 and len(following.unchanged) == 4


def test_a_copy_is_refused_while_an_index_run_holds_the_lock(fake_settings, fake_embedder, postgres_url):
    run_sqlite_index(fake_settings, embedder=fake_embedder)
    with (
        store.connect(postgres_url) as other_host,
        store.index_lock(other_host, postgres_url),
        pytest.raises(IndexBusyError),
    ):
        copy_index(fake_settings, fake_settings.index_path, postgres_url)
    assert _keys(postgres_url) == set()


@pytest.mark.parametrize("stage", ["mid-write", "before-commit", "after-commit"])
def test_a_killed_copy_leaves_the_target_as_it_was_or_the_copy_never_a_mix(
    fake_settings, fake_embedder, postgres_url, tmp_path, stage
):
    run_index(fake_settings, postgres_url, embedder=fake_embedder)  # the target holds the corpus
    old = _keys(postgres_url)
    add_zebra_article(fake_settings.corpus_dir)
    run_sqlite_index(fake_settings, embedder=fake_embedder)  # the file: the corpus and the zebra
    new = old | {"zz_zebra.txt"}
    source = fake_settings.index_path
    before = _sha256(source)

    env = env_for(fake_settings, INDEX_URL=postgres_url, CORPUS_BOT_CRASH_AT=stage)
    crashed = harness(tmp_path, "index", "--from", str(source), "--rebuild", env=env)
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    assert _keys(postgres_url) == (new if stage == "after-commit" else old)
    assert _sha256(source) == before
    copy_index(fake_settings, source, postgres_url, rebuild=True)  # the killed copy's lock is gone
    assert _keys(postgres_url) == new


def test_a_server_error_is_one_line_and_the_target_stays_as_it_was(
    fake_settings, fake_embedder, postgres_url, monkeypatch
):
    from embeddings.errors import IndexWriteError
    from embeddings.postgres import copy

    run_sqlite_index(fake_settings, embedder=fake_embedder)
    monkeypatch.setattr(copy, "_copy_runs", lambda conn, src: conn.execute("SELECT 1 / 0"))
    with pytest.raises(IndexWriteError, match="could not copy into the PostgreSQL index at .*division by zero"):
        copy_index(fake_settings, fake_settings.index_path, postgres_url)
    assert _keys(postgres_url) == set()


def test_an_index_build_that_fails_is_made_again_with_the_servers_own_settings(
    fake_settings, fake_embedder, postgres_url, monkeypatch
):
    """A parallel HNSW build can run out of shared memory where /dev/shm is small (containers)."""
    from embeddings.postgres import copy

    run_sqlite_index(fake_settings, embedder=fake_embedder)
    failed = []

    def out_of_shared_memory(conn, passages):
        if not failed:
            failed.append(passages)
            conn.execute("SELECT 1 / 0")

    monkeypatch.setattr(copy, "_build_memory", out_of_shared_memory)
    copy_index(fake_settings, fake_settings.index_path, postgres_url)
    assert failed and len(_keys(postgres_url)) == 5
    with store.connect(postgres_url) as conn:
        indexes = {name for (name,) in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'passages'")}
    assert {"passages_embedding", "passages_search", "passages_embedded_hash"} <= indexes


def test_the_real_models_index_copied_answers_as_the_file_and_keeps_the_models_identity(
    shipped_index, real_embedder, postgres_url
):
    from embeddings.postgres.search import load_search_index
    from embeddings.query_model import check_query_embedder
    from embeddings.search.search_index import SearchIndex

    source = shipped_index.index_path
    before = _sha256(source)
    copy_index(shipped_index, source, postgres_url)
    assert _sha256(source) == before
    options = {"model_name": shipped_index.embedding_model, "weak_score": shipped_index.weak_score}
    postgres, sqlite = load_search_index(postgres_url, **options), SearchIndex.load(source, **options)
    try:
        for key in ("model", "model_hash", "probe_vector", "dimension", "generation"):
            assert postgres.meta.get(key) == sqlite.meta.get(key), key
        assert postgres.meta.get("probe_vector") and postgres.meta.get("model_hash")
        check_query_embedder(real_embedder, postgres.meta)  # the query model is verified against the copy
        for question in QUESTIONS:
            for mode in ("vector", "keyword", "hybrid"):
                got = postgres.search(question, real_embedder, k=5, mode=mode).results
                want = sqlite.search(question, real_embedder, k=5, mode=mode).results
                assert want and [(r.article.key, r.position, r.text) for r in got] == [
                    (r.article.key, r.position, r.text) for r in want
                ], (question, mode)
    finally:
        postgres.close()
        sqlite.close()


def test_the_file_is_copied_as_it_was_when_the_copy_began(fake_settings, fake_embedder, postgres_url):
    """An index run that commits to the file during the copy is not seen half-done: the copy holds
    the file's state at its start (one read snapshot), and the next copy the new state."""
    run_sqlite_index(fake_settings, embedder=fake_embedder)
    before = set(run_sqlite_index(fake_settings, embedder=fake_embedder).unchanged)
    add_zebra_article(fake_settings.corpus_dir)
    written = []

    def index_the_file_meanwhile(progress):
        if not written:
            written.append(run_sqlite_index(fake_settings, embedder=fake_embedder).added)

    report = copy_index(fake_settings, fake_settings.index_path, postgres_url, on_progress=index_the_file_meanwhile)
    assert written == [["zz_zebra.txt"]]
    assert set(report.added) == _keys(postgres_url) == before
    copy_index(fake_settings, fake_settings.index_path, postgres_url, rebuild=True)
    assert _keys(postgres_url) == before | {"zz_zebra.txt"}


def test_a_rebuild_copy_gives_up_on_a_target_being_read_with_one_line(
    fake_settings, fake_embedder, postgres_url, monkeypatch
):
    from embeddings.errors import IndexWriteError
    from embeddings.postgres import copy
    from embeddings.postgres.search import load_search_index

    monkeypatch.setattr(copy, "LOCK_WAIT_S", 1)
    run_sqlite_index(fake_settings, embedder=fake_embedder)
    run_index(fake_settings, postgres_url, embedder=fake_embedder)
    held = _keys(postgres_url)
    reader = load_search_index(postgres_url, model_name=fake_embedder.name, weak_score=0.2)  # holds a snapshot
    try:
        with pytest.raises(IndexWriteError, match="is being read .*run the copy again"):
            copy_index(fake_settings, fake_settings.index_path, postgres_url, rebuild=True)
        assert reader.search("kunduz", fake_embedder, k=3).results  # the reader was not disturbed
    finally:
        reader.close()
    assert _keys(postgres_url) == held
    copy_index(fake_settings, fake_settings.index_path, postgres_url, rebuild=True)  # reads ended
    assert _keys(postgres_url) == held


def test_a_damaged_record_leaves_its_whole_file_for_the_next_run(fake_settings, fake_embedder, postgres_url):
    """The next run re-reads a file only when none of it is stored: a file's records go together."""
    records = [{"id": "r1", "title": "Harbour story", "text": "The harbour plan was approved by the town."}]
    records += [{"id": "r9", "title": "Market story", "text": "The market reopened on Monday after the floods."}]
    (fake_settings.corpus_dir / "feed.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    run_sqlite_index(fake_settings, embedder=fake_embedder)
    with sqlite3.connect(fake_settings.index_path) as conn:
        conn.execute(
            "UPDATE article_vectors SET vectors = zeroblob(length(vectors)) "
            "WHERE article_id = (SELECT id FROM articles WHERE key = 'feed.jsonl#r9')"
        )
    conn.close()
    report = copy_index(fake_settings, fake_settings.index_path, postgres_url)
    warnings = dict(report.warnings)
    assert set(warnings) == {"feed.jsonl#r1", "feed.jsonl#r9"}
    assert warnings["feed.jsonl#r9"].startswith("its stored vectors are damaged (1 of its 1 vectors are not unit")
    assert warnings["feed.jsonl#r1"].startswith("another article of its file has damaged vectors; not copied")
    following = run_index(fake_settings, postgres_url, embedder=fake_embedder)
    assert following.added == ["feed.jsonl#r1", "feed.jsonl#r9"] and len(following.unchanged) == 5
