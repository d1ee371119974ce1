"""Damaged files that SQLite's own checks call fine, and files in the wrong place: a flipped bit in
a stored vector, in the vector file's id array, in the tantivy copy; a vector blob one vector
short; a NULL word vector; a folder or a malformed file given as the index; what killed runs
leave behind. Each is damaged for real, in files a real run wrote (fake embedder), and each test
checks what users get: no wrong answer, no traceback, one line saying what to do, and the next
`corpus-bot index` repairing it. See docs/reliability.md."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embeddings import store
from embeddings.index import run_index
from embeddings.search import SearchIndex
from tests.conftest import ROOT
from tests.test_reliability_core import assert_one_error_line, env_for, integrity, invoke

UNRELATED = ["wombat census results", "recipe for apple pie", "football world cup final", "stock market rally",
             "the price of coffee beans", "a new smartphone camera"]
TALIBAN = "002_19231adb1c3244eb.txt"
OTHER = "000_84e6feabee5314c5.txt"

# The real command line with the fake embedder (as tests/test_reliability_core.py's HARNESS), whose
# warnings reach stderr the way a user sees them. TEST_LARGE=1 makes every index large (vector file,
# tantivy copy).
HARNESS = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
from tests.conftest import FakeEmbedder
import embeddings.index, embeddings.query_model, embeddings.tantivy_index, embeddings.vector_file
fake = FakeEmbedder()
embeddings.index.load_embedder = embeddings.query_model.load_embedder = lambda name, **_: fake
if os.environ.get("TEST_LARGE"):
    embeddings.tantivy_index.LARGE_INDEX = embeddings.vector_file.LARGE_INDEX = 1
from bot.cli import main
main()
"""


def cli(tmp_path: Path, settings, *args: str, **env) -> subprocess.CompletedProcess:
    script = tmp_path / "damage_harness.py"
    if not script.exists():
        script.write_text(HARNESS)
    return subprocess.run([sys.executable, str(script), *args], env=env_for(settings, **env), capture_output=True,
                          text=True, timeout=120)


def our_lines(stderr: str) -> list[str]:
    """What corpus-bot itself wrote to stderr (warnings and errors), without the lines of a Rust
    panic message, which tantivy prints itself."""
    return [line for line in stderr.splitlines() if line.startswith(("WARNING", "ERROR", "Error:"))]


def load(settings) -> SearchIndex:
    return SearchIndex.load(settings.index_path, model_name=settings.embedding_model, weak_score=0.2)


def stats(settings) -> dict:
    result = invoke(settings, "stats", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def article_vectors(index_path: Path, key: str) -> tuple[int, np.ndarray]:
    conn = sqlite3.connect(index_path)
    try:
        article_id, count, blob = conn.execute(
            "SELECT a.id, a.passage_count, v.vectors FROM articles a JOIN article_vectors v ON v.article_id = a.id "
            "WHERE a.key = ?", (key,)).fetchone()
    finally:
        conn.close()
    return article_id, np.frombuffer(blob, np.float16).reshape(count, -1).copy()


def store_vectors(index_path: Path, article_id: int, blob: bytes) -> None:
    conn = sqlite3.connect(index_path)
    try:
        conn.execute("UPDATE article_vectors SET vectors = ? WHERE article_id = ?", (blob, article_id))
        conn.commit()
    finally:
        conn.close()


def passage_id_of(index_path: Path, key: str, position: int) -> int:
    with store.reading(index_path) as conn:
        return conn.execute("SELECT p.id FROM passages p JOIN articles a ON a.id = p.article_id "
                            "WHERE a.key = ? AND p.position = ?", (key, position)).fetchone()[0]


def overwrite(path: Path, offset: int, data: bytes, *, keep_mtime: bool) -> None:
    """Write data into the file at offset; keep_mtime: as silent damage would (a flipped bit on
    the disk, restored timestamps), so that only reading every byte can tell."""
    stat = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


# ------------------------------------------------------------------------------ stored vectors


def test_a_flipped_exponent_bit_in_a_stored_vector_is_left_out_reported_and_embedded_again(fake_settings, fake_embedder, caplog):
    run_index(fake_settings)
    article_id, vectors = article_vectors(fake_settings.index_path, TALIBAN)
    dim = int(np.argmax(np.abs(vectors[3])))
    bits = vectors.view(np.uint16)
    bits[3, dim] ^= 1 << 14  # the exponent's top bit: the value times 65536
    assert abs(float(vectors[3, dim])) > 1000
    store_vectors(fake_settings.index_path, article_id, vectors.tobytes())
    assert integrity(fake_settings.index_path) == "ok"  # SQLite sees nothing wrong
    damaged_id = passage_id_of(fake_settings.index_path, TALIBAN, 3)

    idx = load(fake_settings)
    assert idx.damaged == {TALIBAN: "1 of its 15 vectors are not unit vectors"}
    assert "left out of search because their stored vectors are damaged" in caplog.text and TALIBAN in caplog.text
    for question in UNRELATED:
        for mode in ("vector", "hybrid", "keyword"):
            results = idx.search(question, fake_embedder, k=10, mode=mode).results
            assert damaged_id not in [r.passage_id for r in results], (question, mode)
            assert all(-1.0001 <= r.score <= 1.0001 for r in results), (question, mode)
    idx.close()

    assert stats(fake_settings)["damaged_vectors"] == [{"path": TALIBAN, "reason": "1 of its 15 vectors are not unit vectors"}]
    assert f"damaged:   1 articles' vectors, left out of search until `corpus-bot index` embeds them again: {TALIBAN}" \
        in invoke(fake_settings, "stats").stdout

    report = run_index(fake_settings)
    assert report.changed == [TALIBAN] and report.passages_embedded == 15
    assert report.warnings == [(TALIBAN, "its stored vectors were damaged (1 of its 15 vectors are not unit vectors); "
                                         "embedded again")]
    assert stats(fake_settings)["damaged_vectors"] == []
    idx = load(fake_settings)
    assert not idx.damaged
    text = next(iter(idx._texts([passage_id_of(fake_settings.index_path, TALIBAN, 3)]).values()))
    assert idx.search(text, fake_embedder, k=1, mode="vector").results[0].text == text  # searchable again
    idx.close()


def test_a_vector_blob_one_vector_short_is_one_warning_and_the_next_run_embeds_it_again(fake_settings, tmp_path):
    """It was a RuntimeError traceback: the rows after it were shifted onto other passages."""
    run_index(fake_settings)
    article_id, vectors = article_vectors(fake_settings.index_path, TALIBAN)
    store_vectors(fake_settings.index_path, article_id, vectors[:-1].tobytes())
    with store.reading(fake_settings.index_path) as conn:  # a question its own passage answers
        question = conn.execute("SELECT text FROM passages WHERE article_id = ? AND position = 2", (article_id,)).fetchone()[0]

    asked = cli(tmp_path, fake_settings, "ask", question, "--json")
    assert asked.returncode == 0 and "Traceback" not in asked.stderr, asked.stderr
    assert our_lines(asked.stderr) == [
        "WARNING embeddings.search: 15 passages of 1 articles are left out of search because their stored vectors "
        f"are damaged; `corpus-bot index` embeds them again: {TALIBAN} (it has 14 vectors for 15 passages)"]
    assert json.loads(asked.stdout)["results"]
    assert all(r["path"] != TALIBAN for r in json.loads(asked.stdout)["results"])
    assert stats(fake_settings)["damaged_vectors"] == [{"path": TALIBAN, "reason": "it has 14 vectors for 15 passages"}]

    report = run_index(fake_settings)
    assert report.changed == [TALIBAN]
    asked = cli(tmp_path, fake_settings, "ask", question, "--json")
    assert asked.returncode == 0 and our_lines(asked.stderr) == []
    assert json.loads(asked.stdout)["results"][0]["text"] == question


def test_a_null_word_vector_is_one_warning_and_the_next_run_embeds_it_again(fake_settings, tmp_path):
    """It was a TypeError traceback. The schema forbids NULL: another program changed it."""
    run_index(fake_settings)
    conn = sqlite3.connect(fake_settings.index_path)
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET sql = replace(sql, 'vector BLOB NOT NULL', 'vector BLOB') "
                 "WHERE name = 'token_vectors'")
    conn.commit()
    conn.close()
    conn = sqlite3.connect(fake_settings.index_path)
    token = conn.execute("SELECT min(token) FROM token_vectors").fetchone()[0]
    conn.execute("UPDATE token_vectors SET vector = NULL WHERE token = ?", (token,))
    conn.commit()
    conn.close()

    asked = cli(tmp_path, fake_settings, "ask", "Taliban offensive in the north", "--json")
    assert asked.returncode == 0 and "Traceback" not in asked.stderr, asked.stderr
    assert our_lines(asked.stderr) == [
        "WARNING embeddings.word_vectors: 1 stored word vectors are damaged and left out (hybrid search weighs those "
        "words as if the index did not know them); `corpus-bot index` embeds them again"]
    assert json.loads(asked.stdout)["results"]

    assert run_index(fake_settings).warnings == [("(word vectors)", "1 stored word vectors were damaged; embedded again")]
    conn = sqlite3.connect(fake_settings.index_path)
    assert conn.execute("SELECT length(vector) FROM token_vectors WHERE token = ?", (token,)).fetchone()[0] == 512
    conn.close()
    assert our_lines(cli(tmp_path, fake_settings, "ask", "Taliban offensive in the north").stderr) == []


# ------------------------------------------------------------------------------ the index file itself


@pytest.mark.parametrize("command", [["index"], ["index", "--rebuild"], ["ask", "Taliban"], ["stats"], ["sources"]])
def test_a_folder_given_as_the_index_is_one_clear_line(fake_settings, command):
    """It was reported as a full disk."""
    fake_settings.index_path.mkdir(parents=True)
    result = invoke(fake_settings, *command)
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, f"the index path {fake_settings.index_path} is a folder (INDEX_PATH or --index)",
                          f"for example {fake_settings.index_path / 'index.sqlite3'}")
    assert not any(fake_settings.index_path.iterdir())


@pytest.mark.parametrize("damage", ["malformed", "not a database"])
@pytest.mark.parametrize("command", [["index"], ["index", "--rebuild"], ["ask", "Taliban"], ["stats"], ["sources"]])
def test_a_damaged_index_file_is_one_line_saying_to_move_it_away_and_is_left_as_it_is(fake_settings, command, damage):
    run_index(fake_settings)
    path = fake_settings.index_path
    if damage == "malformed":  # the schema's page: every statement finds it malformed
        overwrite(path, 100, np.random.default_rng(1).bytes(3900), keep_mtime=False)
    else:
        overwrite(path, 0, b"garbage, not the SQLite header", keep_mtime=False)
    before = path.read_bytes()
    result = invoke(fake_settings, *command)
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, f"the index file {path} is damaged",
                          "move it away and run `corpus-bot index` to build a new one", "`--rebuild` cannot repair it")
    assert path.read_bytes() == before


