"""Damaged files that SQLite's own checks call fine, and files in the wrong place: a flipped bit in
a stored vector, in the vector file's id array, in the tantivy copy; a vector blob one vector
short; a NULL word vector; a folder or a malformed file given as the index; what killed runs
leave behind. Each is damaged for real, in files a real run wrote (fake embedder), and each test
checks what users get: no wrong answer, no traceback, one line saying what to do, and the next
`corpus-bot index` repairing it. See docs/reliability.md."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import embeddings.vectors as vectors_module
from embeddings import derived, store, tantivy_index, vector_file
from embeddings.index import remove_leftovers, run_index
from embeddings.search import SearchIndex
from tests.helpers import ROOT
from tests.test_reliability_core import assert_one_error_line, env_for, integrity, invoke

UNRELATED = [
    "wombat census results",
    "recipe for apple pie",
    "football world cup final",
    "stock market rally",
    "the price of coffee beans",
    "a new smartphone camera",
]
TALIBAN = "002_19231adb1c3244eb.txt"
OTHER = "000_84e6feabee5314c5.txt"

# The real command line with the fake embedder (as tests/test_reliability_core.py's HARNESS), whose
# warnings reach stderr the way a user sees them. TEST_LARGE=1 makes every index large (vector file,
# tantivy copy); TEST_KILL_WRITING_VECTORS=1 kills the run with SIGKILL while it writes the vector file.
HARNESS = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
from tests.helpers import FakeEmbedder
import embeddings.index, embeddings.query_model, embeddings.store, embeddings.tantivy_index, embeddings.vector_file
fake = FakeEmbedder()
embeddings.index.load_embedder = embeddings.query_model.load_embedder = lambda name, **_: fake
if os.environ.get("TEST_LARGE"):
    import embeddings.derived
    embeddings.derived.LARGE_INDEX = 1
if os.environ.get("TEST_KILL_WRITING_VECTORS"):
    def killed(conn):  # called once the vectors are written into the new folder
        os.kill(os.getpid(), signal.SIGKILL)
    embeddings.store.passage_ids_by_row = killed
from bot.cli import main
main()
"""


def cli(tmp_path: Path, settings, *args: str, **env) -> subprocess.CompletedProcess:
    script = tmp_path / "damage_harness.py"
    if not script.exists():
        script.write_text(HARNESS)
    return subprocess.run(
        [sys.executable, str(script), *args], env=env_for(settings, **env), capture_output=True, text=True, timeout=120
    )


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
            "WHERE a.key = ?",
            (key,),
        ).fetchone()
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
        return conn.execute(
            "SELECT p.id FROM passages p JOIN articles a ON a.id = p.article_id WHERE a.key = ? AND p.position = ?",
            (key, position),
        ).fetchone()[0]


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


def test_a_flipped_exponent_bit_in_a_stored_vector_is_left_out_reported_and_embedded_again(
    fake_settings, fake_embedder, caplog
):
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

    assert stats(fake_settings)["damaged_vectors"] == [
        {"path": TALIBAN, "reason": "1 of its 15 vectors are not unit vectors"}
    ]
    assert (
        f"damaged:   1 article's vectors, left out of search until `corpus-bot index` embeds them again: {TALIBAN}"
        in invoke(fake_settings, "stats").stdout
    )

    report = run_index(fake_settings)
    assert report.changed == [TALIBAN] and report.passages_embedded == 15
    assert report.warnings == [
        (TALIBAN, "its stored vectors were damaged (1 of its 15 vectors are not unit vectors); embedded again")
    ]
    assert stats(fake_settings)["damaged_vectors"] == []
    idx = load(fake_settings)
    assert not idx.damaged
    row = int(np.nonzero(idx.passage_ids == passage_id_of(fake_settings.index_path, TALIBAN, 3))[0][0])
    text = next(iter(idx._texts([row]).values()))
    assert idx.search(text, fake_embedder, k=1, mode="vector").results[0].text == text  # searchable again
    idx.close()


def test_a_vector_blob_one_vector_short_is_one_warning_and_the_next_run_embeds_it_again(fake_settings, tmp_path):
    """It was a RuntimeError traceback: the rows after it were shifted onto other passages."""
    run_index(fake_settings)
    article_id, vectors = article_vectors(fake_settings.index_path, TALIBAN)
    store_vectors(fake_settings.index_path, article_id, vectors[:-1].tobytes())
    with store.reading(fake_settings.index_path) as conn:  # a question its own passage answers
        question = conn.execute(
            "SELECT text FROM passages WHERE article_id = ? AND position = 2", (article_id,)
        ).fetchone()[0]

    asked = cli(tmp_path, fake_settings, "ask", question, "--json")
    assert asked.returncode == 0 and "Traceback" not in asked.stderr, asked.stderr
    assert our_lines(asked.stderr) == [
        "WARNING embeddings.search: 15 passages of 1 articles are left out of search because their stored vectors "
        f"are damaged; `corpus-bot index` embeds them again: {TALIBAN} (it has 14 vectors for 15 passages)"
    ]
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
    conn.execute(
        "UPDATE sqlite_master SET sql = replace(sql, 'vector BLOB NOT NULL', 'vector BLOB') "
        "WHERE name = 'token_vectors'"
    )
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
        "words as if the index did not know them); `corpus-bot index` embeds them again"
    ]
    assert json.loads(asked.stdout)["results"]

    assert run_index(fake_settings).warnings == [
        ("(word vectors)", "1 stored word vectors were damaged; embedded again")
    ]
    conn = sqlite3.connect(fake_settings.index_path)
    assert conn.execute("SELECT length(vector) FROM token_vectors WHERE token = ?", (token,)).fetchone()[0] == 512
    conn.close()
    assert our_lines(cli(tmp_path, fake_settings, "ask", "Taliban offensive in the north").stderr) == []


# ------------------------------------------------------------------------------ the vector file


@pytest.fixture
def large(monkeypatch):
    monkeypatch.setattr("embeddings.derived.LARGE_INDEX", 1)
    monkeypatch.setattr(vectors_module, "PREFILTER_MIN_ROWS", 16)


def one_bit_apart(index_path: Path) -> tuple[int, int, int]:
    """A row of the vector file, and the bit whose flip makes its passage id that of a passage
    of another article: (row, bit, that passage id)."""
    ids = np.load(vector_file.folder_for(index_path) / "ids.npy")
    with store.reading(index_path) as conn:
        owners = dict(conn.execute("SELECT p.id, a.key FROM passages p JOIN articles a ON a.id = p.article_id"))
    for row, pid in enumerate(ids.tolist()):
        for bit in range(8):
            other = pid ^ (1 << bit)
            if other in owners and owners[other] != owners[pid]:
                return row, bit, other
    raise AssertionError("no two passage ids one bit apart")


def test_a_flipped_bit_in_the_vector_files_ids_never_puts_a_passage_under_another_articles_title(
    large, fake_settings, fake_embedder, caplog
):
    run_index(fake_settings)
    folder = vector_file.folder_for(fake_settings.index_path)
    idx = load(fake_settings)
    expected = {
        q: [(r.passage_id, r.article.key) for r in idx.search(q, fake_embedder, k=8).results]
        for q in ("Sebghatullah Selab", "Taliban offensive in the north")
    }
    idx.close()
    row, bit, other = one_bit_apart(fake_settings.index_path)
    ids = folder / "ids.npy"
    header = len(ids.read_bytes()) - 8 * len(np.load(ids))
    original = ids.read_bytes()[header + 8 * row]

    # A write into the file: its modification time gives it away at load.
    overwrite(ids, header + 8 * row, bytes([original ^ (1 << bit)]), keep_mtime=False)
    idx = load(fake_settings)
    assert not isinstance(idx.vectors.exact, vector_file.RowFile), "the damaged copy is not used"
    assert "ids.npy changed since it was written" in caplog.text
    assert {
        q: [(r.passage_id, r.article.key) for r in idx.search(q, fake_embedder, k=8).results] for q in expected
    } == expected
    idx.close()

    # The same damage without a trace in the timestamps: the file is hashed at load (8 bytes a passage).
    derived.restamp(folder)  # the recorded size and time now match the file; the recorded hash does not
    caplog.clear()
    idx = load(fake_settings)
    assert not isinstance(idx.vectors.exact, vector_file.RowFile)
    assert "ids.npy is damaged" in caplog.text
    idx.close()

    # The index job finds it, and writes the file again.
    report = run_index(fake_settings)
    assert [w for w, text in report.warnings] == ["(vector file)"] and "ids.npy is damaged" in report.warnings[0][1]
    idx = load(fake_settings)
    assert isinstance(idx.vectors.exact, vector_file.RowFile)

    # Damage no check saw (here, in memory): the passage is read with its article and left out.
    idx.passage_ids = idx.passage_ids.copy()
    idx.passage_ids[row] ^= 1 << bit
    idx._id_order = None
    caplog.clear()
    with store.reading(fake_settings.index_path) as conn:
        owner = dict(conn.execute("SELECT p.id, a.key FROM passages p JOIN articles a ON a.id = p.article_id"))
    for question in [*expected, *UNRELATED]:
        for result in idx.search(question, fake_embedder, k=10).results:
            assert owner[result.passage_id] == result.article.key, "a quote shown under another article's title"
    assert idx._texts([row]) == {} and f"passage {other} left out" in caplog.text
    idx.close()


def test_a_row_damaged_silently_in_the_vector_file_matches_nothing(large, fake_settings, fake_embedder, caplog):
    """The reader cannot hash 768 MB of rows at each load: each row a question rescores is checked
    as it is read, until `index` finds the damage and writes the file again."""
    run_index(fake_settings)
    exact = vector_file.folder_for(fake_settings.index_path) / "exact.npy"
    rows = np.load(exact)
    header = exact.stat().st_size - rows.nbytes
    row = int(
        np.nonzero(
            np.load(vector_file.folder_for(fake_settings.index_path) / "ids.npy")
            == passage_id_of(fake_settings.index_path, TALIBAN, 3)
        )[0][0]
    )
    dim = int(np.argmax(np.abs(rows[row])))
    value = rows[row].view(np.uint16)[dim] ^ (1 << 14)
    overwrite(exact, header + (row * rows.shape[1] + dim) * 2, int(value).to_bytes(2, "little"), keep_mtime=True)
    idx = load(fake_settings)
    assert isinstance(idx.vectors.exact, vector_file.RowFile)  # the cheap checks pass
    damaged_id = int(idx.passage_ids[row])
    own_text = next(iter(idx._texts([row]).values()))
    for question in [*UNRELATED, own_text]:
        results = idx.search(question, fake_embedder, k=10, mode="vector").results
        assert all(r.score <= 1.0001 for r in results) and damaged_id not in [r.passage_id for r in results[:1]]
    assert "vectors of 1 passages" in caplog.text and "are damaged" in caplog.text
    idx.close()
    report = run_index(fake_settings)
    assert [w for w, _ in report.warnings] == ["(vector file)"] and "exact.npy is damaged" in report.warnings[0][1]


@pytest.mark.parametrize("copy", ["tantivy", "vector file"])
def test_silent_damage_in_a_derived_copy_is_found_by_the_index_job_which_builds_it_again(
    large, fake_settings, fake_embedder, copy
):
    """Checksums written with each copy: `index` reads every byte and builds a copy that does
    not match again, though its tag says it is current."""
    module = tantivy_index if copy == "tantivy" else vector_file
    run_index(fake_settings)
    folder = module.folder_for(fake_settings.index_path)
    biggest = max((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.stat().st_size)
    overwrite(biggest, biggest.stat().st_size // 2, b"\xff" * 64, keep_mtime=True)
    assert derived.changed_files(folder) is None  # a reader cannot tell
    assert derived.verify(folder) == f"{biggest.name} is damaged (its sha256 differs from the one it was written with)"

    report = run_index(fake_settings)
    what = "(keyword index)" if copy == "tantivy" else "(vector file)"
    assert [w for w, _ in report.warnings] == [what] and f"{biggest.name} is damaged" in report.warnings[0][1]
    assert derived.verify(folder) is None
    assert not run_index(fake_settings).warnings  # and the next run finds it whole
    idx = load(fake_settings)
    assert (idx.tantivy is not None) if copy == "tantivy" else isinstance(idx.vectors.exact, vector_file.RowFile)
    assert idx.search("Sebghatullah Selab", fake_embedder, mode="keyword").results
    idx.close()


# ------------------------------------------------------------------------------ the tantivy copy


def garbage_in_the_tantivy_copy(settings, *, keep_mtime: bool) -> Path:
    """Up to 4 KB of garbage at the start of the copy's largest segment file (tantivy panics reading
    it). Its last 512 bytes, the footer checked when the copy opens, stay whole: how many segments
    tantivy writes, and so how small the largest is, varies from run to run."""
    folder = tantivy_index.folder_for(settings.index_path)
    target = max(folder.glob("*.idx"), key=lambda p: p.stat().st_size)
    garbage = np.random.default_rng(7).bytes(min(4096, target.stat().st_size - 512))
    overwrite(target, 0, garbage, keep_mtime=keep_mtime)
    return target


def test_garbage_in_the_tantivy_copy_means_fts5_with_one_warning_and_the_next_run_rebuilds_it(
    large, fake_settings, fake_embedder, caplog
):
    run_index(fake_settings)
    idx = load(fake_settings)
    fts5 = idx.tantivy
    idx.tantivy = None
    expected = {
        (q, m): [r.passage_id for r in idx.search(q, fake_embedder, mode=m).results]
        for q in ("Sebghatullah Selab", "Kunduz airport")
        for m in ("keyword", "hybrid")
    }
    idx.tantivy = fts5
    idx.close()

    # Written into: seen at load, from its modification time.
    target = garbage_in_the_tantivy_copy(fake_settings, keep_mtime=False)
    idx = load(fake_settings)
    assert idx.tantivy is None and f"{target.name} changed since it was written" in caplog.text
    idx.close()
    assert "tantivy copy is damaged" in stats(fake_settings)["keyword_search"]
    report = run_index(fake_settings)
    assert [w for w, _ in report.warnings] == ["(keyword index)"]

    # Silently: the copy is opened; the first failure (a Rust panic, a BaseException) switches to FTS5.
    garbage_in_the_tantivy_copy(fake_settings, keep_mtime=True)
    idx = load(fake_settings)
    assert idx.tantivy is not None
    caplog.clear()
    got = {
        (q, m): [r.passage_id for r in idx.search(q, fake_embedder, mode=m).results]
        for q in ("Sebghatullah Selab", "Kunduz airport")
        for m in ("keyword", "hybrid")
    }
    assert idx.tantivy is None
    assert [r.message.split(" (")[0] for r in caplog.records if r.levelname == "WARNING"] == [
        "keyword search uses FTS5: the tantivy copy failed"
    ]
    assert got[("Sebghatullah Selab", "keyword")] == expected[("Sebghatullah Selab", "keyword")]
    assert got[("Kunduz airport", "keyword")] == expected[("Kunduz airport", "keyword")]
    idx.close()
    report = run_index(fake_settings)
    assert [w for w, _ in report.warnings] == ["(keyword index)"]
    idx = load(fake_settings)
    assert idx.tantivy is not None and idx.search("Sebghatullah Selab", fake_embedder, mode="keyword").results
    idx.close()


@pytest.mark.parametrize("silent", [False, True], ids=["written into", "silent"])
def test_the_cli_answers_through_a_damaged_tantivy_copy_with_one_warning(fake_settings, tmp_path, silent):
    """It was a 119-line PanicException traceback. A Rust panic prints its own message on stderr
    (tantivy's, before Python sees it); nothing else but the warning and the answer."""
    assert cli(tmp_path, fake_settings, "index", TEST_LARGE="1").returncode == 0
    garbage_in_the_tantivy_copy(fake_settings, keep_mtime=silent)
    asked = cli(
        tmp_path,
        fake_settings,
        "ask",
        "Sebghatullah Selab",
        "--mode",
        "keyword",
        "--json",
        TEST_LARGE="1",
        RUST_BACKTRACE="0",
    )
    assert asked.returncode == 0, asked.stderr
    assert "Traceback" not in asked.stderr
    lines = our_lines(asked.stderr)
    assert len(lines) == 1 and lines[0].startswith(
        "WARNING embeddings.search: keyword search uses FTS5: the tantivy copy failed"
        if silent
        else "WARNING embeddings.tantivy_index: keyword search uses FTS5: the tantivy copy in"
    ), asked.stderr
    assert "Sebghatullah Selab" in json.loads(asked.stdout)["results"][0]["text"]


# ------------------------------------------------------------------------------ the index file itself


@pytest.mark.parametrize("command", [["index"], ["index", "--rebuild"], ["ask", "Taliban"], ["stats"], ["sources"]])
def test_a_folder_given_as_the_index_is_one_clear_line(fake_settings, command):
    """It was reported as a full disk."""
    fake_settings.index_path.mkdir(parents=True)
    result = invoke(fake_settings, *command)
    assert result.exit_code == 1
    assert_one_error_line(
        result.stderr,
        f"the index path {fake_settings.index_path} is a folder (INDEX_PATH or --index)",
        f"for example {fake_settings.index_path / 'index.sqlite3'}",
    )
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
    assert_one_error_line(
        result.stderr,
        f"the index file {path} is damaged",
        "move it away and run `corpus-bot index` to build a new one",
        "`--rebuild` cannot repair it",
    )
    assert path.read_bytes() == before


# ------------------------------------------------------------------------------ leftovers


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_next_run_removes_what_a_killed_run_left(fake_settings, tmp_path):
    assert cli(tmp_path, fake_settings, "index", TEST_LARGE="1").returncode == 0
    (fake_settings.corpus_dir / TALIBAN).write_text(
        (fake_settings.corpus_dir / TALIBAN).read_text() + "\n\nA new paragraph.\n"
    )
    killed = cli(tmp_path, fake_settings, "index", TEST_LARGE="1", TEST_KILL_WRITING_VECTORS="1")
    assert killed.returncode == -signal.SIGKILL
    data = fake_settings.index_path.parent
    (building,) = data.glob("index.sqlite3.vectors.building-*")
    assert (building / "exact.npy").stat().st_size > 0  # as large as the vectors: 768 MB at 1M passages
    # An export killed midway; and one whose pid a live process (not corpus-bot) has taken since.
    export = data / f"index.sqlite3.query-model.tmp-{dead_pid()}"
    export.mkdir()
    (export / "unfused.onnx").write_bytes(b"\0" * 1000)
    taken = data / "index.sqlite3.tantivy.building-1"
    taken.mkdir()

    result = cli(tmp_path, fake_settings, "index", "--json", TEST_LARGE="1")
    assert result.returncode == 0, result.stderr
    warnings = {
        w["warning"].split(" (")[0] for w in json.loads(result.stdout)["warnings"] if w["path"] == "(leftovers)"
    }
    assert warnings == {f"removed {p.name}" for p in (building, export, taken)}
    assert (
        sorted(p.name for p in data.iterdir() if "building" in p.name or ".tmp-" in p.name or ".old-" in p.name) == []
    )
    # The killed run had committed: this one only writes the vector file it did not finish.
    assert json.loads(result.stdout)["changed"] == []
    assert derived.read_tag(vector_file.folder_for(fake_settings.index_path)) == _generation(fake_settings)


def _generation(settings) -> str:
    with store.reading(settings.index_path) as conn:
        return store.read_meta(conn)["generation"]


def test_outside_the_index_lock_only_leftovers_of_dead_processes_are_removed(tmp_path):
    """Evaluation indexes are built without the lock: a live pid may be a build in progress."""
    index_path = tmp_path / "set-0123.sqlite3"
    dead, alive = dead_pid(), os.getpid()
    for pid in (dead, alive):
        (tmp_path / f"set-0123.sqlite3.building-{pid}").write_bytes(b"x")
        (tmp_path / f"set-0123.sqlite3.building-{pid}-wal").write_bytes(b"x")
    (tmp_path / "other.sqlite3.building-1").write_bytes(b"x")  # another index's
    removed = remove_leftovers(index_path, locked=False)
    assert sorted(text.split(" (")[0] for _, text in removed) == [
        f"removed set-0123.sqlite3.building-{dead}",
        f"removed set-0123.sqlite3.building-{dead}-wal",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["other.sqlite3.building-1", f"set-0123.sqlite3.building-{alive}", f"set-0123.sqlite3.building-{alive}-wal"]
    )
