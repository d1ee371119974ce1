"""The index job with the fake embedder: incremental runs, atomicity guards, refusals."""

import sqlite3
from dataclasses import replace

import pytest

from embeddings import store
from embeddings.errors import IndexRefusedError
from embeddings.index import run_index
from embeddings.migrations import SCHEMA_VERSION

SHIPPED = sorted(
    [
        "000_84e6feabee5314c5.txt",
        "001_d4691cda91f5b4eb.txt",
        "002_19231adb1c3244eb.txt",
        "003_67286731495c820e.txt",
        "004_df801900fabe096f.txt",
    ]
)


def passages_of(settings):
    conn = sqlite3.connect(settings.index_path)
    try:
        return conn.execute("SELECT a.key, p.text FROM passages p JOIN articles a ON a.id = p.article_id").fetchall()
    finally:
        conn.close()


def test_first_run_indexes_every_article(fake_settings, fake_embedder):
    report = run_index(fake_settings)
    assert report.added == SHIPPED
    assert report.skipped == [] and report.removed == [] and report.changed == []
    assert report.articles_total == 5
    # Every passage is embedded once, and the probe text once (model_identity.py).
    assert report.passages_total == report.passages_embedded == fake_embedder.texts_embedded - 1 > 25
    conn = store.connect_for_reading(fake_settings.index_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    meta = store.read_meta(conn)
    assert meta["model"] == fake_embedder.name and meta["dimension"] == str(fake_embedder.dimension)
    assert store.last_run(conn)["report"]["added"] == SHIPPED


def test_bad_files_are_skipped_with_reasons_and_the_rest_indexed(fake_settings):
    corpus = fake_settings.corpus_dir
    (corpus / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (corpus / "latin1.txt").write_bytes("Caf\xe9 society\n\nUne phrase en fran\xe7ais ici.".encode("latin-1"))
    (corpus / "damaged.txt").write_bytes("Caf\xe9 society\n\nUne phrase en fran\xe7ais ici.".encode() + b"\xff")
    (corpus / "empty.txt").write_bytes(b"")
    report = run_index(fake_settings)
    reasons = dict(report.skipped)
    assert set(reasons) == {"image.txt", "damaged.txt", "empty.txt"}
    assert "binary" in reasons["image.txt"]
    assert "UTF-8" in reasons["damaged.txt"]
    assert "empty" in reasons["empty.txt"]
    assert report.added == sorted([*SHIPPED, "latin1.txt"])  # legacy text is decoded, and the report says how
    assert ("latin1.txt", "decoded as windows-1252") in report.warnings
    assert any(line.startswith("skipped image.txt: ") for line in report.lines())


def test_a_file_that_turns_bad_keeps_its_previous_version(fake_settings):
    run_index(fake_settings)
    before = [t for k, t in passages_of(fake_settings) if k == SHIPPED[1]]
    (fake_settings.corpus_dir / SHIPPED[1]).write_bytes(b"\x00\x01binary garbage")
    report = run_index(fake_settings)
    assert SHIPPED[1] in report.unchanged and SHIPPED[1] not in report.removed
    assert "kept the previously indexed version" in dict(report.skipped)[SHIPPED[1]]
    assert [t for k, t in passages_of(fake_settings) if k == SHIPPED[1]] == before


def test_missing_corpus_folder_is_a_clear_error(fake_settings, tmp_path):
    with pytest.raises(IndexRefusedError, match="does not exist"):
        run_index(replace(fake_settings, corpus_dir=tmp_path / "nope"))


def test_progress_reports_files_and_passages(fake_settings):
    seen = []
    run_index(fake_settings, on_progress=lambda p: seen.append((p.stage, p.files_scanned, p.passages_embedded)))
    stages = [s for s, _, _ in seen]
    assert stages[0] == "scanning" and "embedding" in stages and stages[-1] == "done"
    assert seen[-1][1] == 5 and seen[-1][2] > 0
