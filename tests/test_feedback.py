"""Votes on answers are stored in the index file and exported as an evaluation set."""

import asyncio
import json
import sqlite3

from click.testing import CliRunner

from bot.cli import cli
from embeddings.evaluate import load_beir
from embeddings.feedback import record_feedback
from embeddings.index import run_index
from embeddings.search import SearchIndex


def answers(settings, embedder, *questions):
    idx = SearchIndex.load(settings.index_path, model_name=embedder.name, weak_score=0.2)
    try:
        return [idx.search(q, embedder) for q in questions]
    finally:
        idx.close()


def test_votes_are_stored_and_exported_as_a_beir_set(fake_settings, fake_embedder, tmp_path):
    run_index(fake_settings)
    good, bad = answers(fake_settings, fake_embedder, "Ahmed Shah Massoud", "sourdough starter")
    asyncio.run(record_feedback(fake_settings.index_path, good, user_id=42, vote=1, mode="vector"))
    asyncio.run(record_feedback(fake_settings.index_path, bad, user_id=43, vote=-1, mode="vector"))

    conn = sqlite3.connect(fake_settings.index_path)
    rows = conn.execute("SELECT user_id, question, vote, results FROM feedback ORDER BY id").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [("42", "Ahmed Shah Massoud", 1), ("43", "sourdough starter", -1)]
    assert json.loads(rows[0][3])[0]["text"] == good.results[0].text

    out = tmp_path / "feedback-eval"
    env = {"INDEX_PATH": str(fake_settings.index_path), "EMBEDDING_MODEL": fake_embedder.name}
    result = CliRunner().invoke(cli, ["feedback", "export", str(out)], env=env, catch_exceptions=False)
    assert result.exit_code == 0
    assert "2 questions from 2 votes (1 with a passage judged relevant)" in result.output

    data = load_beir(out)
    top = good.results[0]
    assert data.qrels["q1"] == {f"{top.article.key}#{top.position + 1}": 1}
    assert set(data.qrels["q2"].values()) == {0}
    assert len(data.docs) == len(conn.execute("SELECT id FROM passages").fetchall())

    evaluated = CliRunner().invoke(cli, ["eval", str(out), "--json"], env=env, catch_exceptions=False)
    metrics = json.loads(evaluated.output)
    assert metrics["queries"] == 1 and metrics["mrr@10"] == 1.0  # the voted passage is found again


def test_judgments_on_passages_that_changed_are_dropped(fake_settings, fake_embedder, tmp_path):
    run_index(fake_settings)
    (good,) = answers(fake_settings, fake_embedder, "Ahmed Shah Massoud")
    asyncio.run(record_feedback(fake_settings.index_path, good, user_id=1, vote=1, mode="vector"))
    path = fake_settings.corpus_dir / good.results[0].article.key
    path.write_text(path.read_text().replace("Ahmed Shah Massoud", "Ahmad Shah Masood"))
    run_index(fake_settings)
    env = {"INDEX_PATH": str(fake_settings.index_path)}
    result = CliRunner().invoke(cli, ["feedback", "export", str(tmp_path / "out")], env=env, catch_exceptions=False)
    assert "1 judgment dropped (passage changed since the vote)" in result.output


def test_an_export_from_postgresql_is_the_export_from_sqlite_for_the_same_votes(
    fake_settings, fake_embedder, tmp_path, postgres_url
):
    """The same votes on the same corpus, one index in the SQLite file and one in PostgreSQL:
    `feedback export` writes the same three files from either. `eval` keeps its own cached
    evaluation index: an INDEX_URL in the environment is ignored there, not refused."""
    from embeddings.feedback import record_feedback_in_postgres
    from embeddings.postgres.indexing import run_index as run_postgres_index

    run_index(fake_settings)
    run_postgres_index(fake_settings, postgres_url, embedder=fake_embedder)
    votes = zip(
        answers(fake_settings, fake_embedder, "Ahmed Shah Massoud", "sourdough starter", "Ahmed Shah Massoud"),
        [(42, 1), (43, -1), (44, 1)],
    )
    for answer, (user, vote) in votes:
        asyncio.run(record_feedback(fake_settings.index_path, answer, user_id=user, vote=vote, mode="hybrid"))
        record_feedback_in_postgres(postgres_url, answer, user_id=user, vote=vote, mode="hybrid")

    env = {"INDEX_PATH": str(fake_settings.index_path), "EMBEDDING_MODEL": fake_embedder.name, "INDEX_URL": ""}
    exported = {}
    for name, url in (("sqlite", ""), ("postgres", postgres_url)):
        out = tmp_path / name
        result = CliRunner().invoke(
            cli, ["feedback", "export", str(out)], env={**env, "INDEX_URL": url}, catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        assert "2 questions from 3 votes (1 with a passage judged relevant)" in result.output
        exported[name] = {f.name: f.read_bytes() for f in sorted(out.iterdir())}
    assert sorted(exported["sqlite"]) == ["corpus.jsonl", "qrels.tsv", "queries.jsonl"]
    assert exported["postgres"] == exported["sqlite"]

    evaluated = CliRunner().invoke(
        cli, ["eval", str(tmp_path / "postgres"), "--json"], env={**env, "INDEX_URL": postgres_url}
    )
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads(evaluated.output)
    assert metrics["queries"] == 1 and metrics["mrr@10"] == 1.0
