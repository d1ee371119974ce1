"""Records, renames and duplicates through `corpus-bot index` / `ask` (click's runner), with the
real model and SQLite: one bad record, record keys, moved files, copies of an article."""
import json
import sqlite3

import pytest
from click.testing import CliRunner

from bot.cli import cli
from tests.conftest import use_embedder

WORDS = ["harbour", "council", "bridge", "library", "tram", "school", "river", "market", "stadium", "clinic"]


def story(i: int) -> str:
    return f"The {WORDS[i % 10]} project number {i} was approved by the town after a long debate."


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    return folder


@pytest.fixture
def run(tmp_path, corpus, monkeypatch, real_embedder):
    use_embedder(monkeypatch, real_embedder)
    env = {"CORPUS_DIR": str(corpus), "INDEX_PATH": str(tmp_path / "index.sqlite3")}

    def invoke(*args):
        result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.output) if "--json" in args else result.output

    invoke.index_path = tmp_path / "index.sqlite3"
    return invoke


def keys(run) -> list[str]:
    conn = sqlite3.connect(run.index_path)
    try:
        return [k for (k,) in conn.execute("SELECT key FROM articles ORDER BY key")]
    finally:
        conn.close()


def test_one_bad_record_skips_only_that_record(run, corpus):
    lines = [json.dumps({"id": f"r{i}", "title": f"Story {i}", "text": story(i)}) for i in range(1, 6)]
    lines[2] = '{"id": "r3", "title": "Broken", "text": '  # line 3 is cut short
    lines.append(json.dumps({"id": "r6", "title": "No text"}))
    (corpus / "many.jsonl").write_text("\n".join(lines) + "\n")
    output = run("index")
    assert "skipped many.jsonl#3: invalid JSON" in output
    assert 'skipped many.jsonl#6: has no text' in output
    assert keys(run) == ["many.jsonl#r1", "many.jsonl#r2", "many.jsonl#r4", "many.jsonl#r5"]
