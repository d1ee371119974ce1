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
    lines.append(json.dumps({"id": "r2", "title": "Story 2 again", "text": story(8)}))
    (corpus / "many.jsonl").write_text("\n".join(lines) + "\n")
    output = run("index")
    assert "4 added" in output
    assert "skipped many.jsonl#3: invalid JSON" in output
    assert "skipped many.jsonl#6: has no text" in output
    assert "skipped many.jsonl#7: same id as line 2; only the first is indexed" in output
    assert keys(run) == ["many.jsonl#r1", "many.jsonl#r2", "many.jsonl#r4", "many.jsonl#r5"]


def test_deleting_the_first_record_touches_only_it(run, corpus):
    lines = [json.dumps({"title": f"Story {i}", "text": story(i)}) for i in range(1, 6)]
    (corpus / "feed.jsonl").write_text("\n".join(lines) + "\n")
    first = run("index", "--json")
    assert len(first["added"]) == 5 and first["passages_embedded"] == 5
    before = keys(run)
    (corpus / "feed.jsonl").write_text("\n".join(lines[1:]) + "\n")
    report = run("index", "--json")
    assert report["passages_embedded"] == 0 and not report["added"] and not report["changed"]
    assert len(report["removed"]) == 1 and report["unchanged"] == keys(run) == [
        k for k in before if k not in report["removed"]
    ]
    again = run("index", "--json")  # the file's new hash is stored: nothing to read again
    assert again["passages_embedded"] == 0 and again["unchanged"] == keys(run)


def test_an_edited_record_is_the_only_one_changed_and_embeds_only_its_new_text(run, corpus):
    records = [{"id": f"n{i}", "title": f"Story {i}", "text": f"{story(i)}\n\n{story(i + 20)}"} for i in range(1, 4)]
    path = corpus / "feed.jsonl"
    path.write_text("\n".join(map(json.dumps, records)))
    run("index")
    records[1]["text"] = f"{story(2)}\n\nA new closing paragraph about the {WORDS[5]} in the evening news today."
    path.write_text("\n".join(map(json.dumps, records)))
    report = run("index", "--json")
    assert report["changed"] == ["feed.jsonl#n2"] and report["unchanged"] == ["feed.jsonl#n1", "feed.jsonl#n3"]
    passages = report["passages_embedded"] + report["passages_reused"]
    assert 0 < report["passages_embedded"] < passages  # the unchanged first paragraph's vector is reused


def test_an_index_keyed_by_record_numbers_is_keyed_anew_without_embedding(run, corpus):
    lines = [json.dumps({"title": f"Story {i}", "text": story(i)}) for i in range(1, 4)]
    lines.append(json.dumps({"id": "x9", "title": "Story 9", "text": story(9)}))
    (corpus / "feed.jsonl").write_text("\n".join(lines))
    (corpus / "plain.txt").write_text("Plain\n\n" + story(7) + "\n")
    run("index")
    new_keys = keys(run)
    # The index as the previous schema wrote it: records keyed by their number, no embedded-text hashes.
    conn = sqlite3.connect(run.index_path)
    with conn:
        rows = conn.execute("SELECT id FROM articles WHERE file = 'feed.jsonl' ORDER BY id").fetchall()
        for number, (article_id,) in enumerate(rows, start=1):
            conn.execute("UPDATE articles SET key = ? WHERE id = ?", (f"feed.jsonl#{number}", article_id))
        conn.execute("DROP INDEX passages_embedded_hash")
        conn.execute("ALTER TABLE passages DROP COLUMN embedded_hash")
        conn.execute("DROP TABLE weak_questions")
        conn.execute("PRAGMA user_version = 6")
    conn.close()
    report = run("index", "--json")
    assert keys(run) == new_keys and report["passages_embedded"] == 0 and report["passages_reused"] == 4
    assert report["unchanged"] == ["plain.txt"]
    assert any(w["path"] == "feed.jsonl" and "keyed by their id or content" in w["warning"] for w in report["warnings"])


def test_a_renamed_file_is_moved_not_embedded(run, corpus):
    (corpus / "old.txt").write_text("Harbour plan\n\n" + story(0) + "\n")
    (corpus / "feed.jsonl").write_text(json.dumps({"id": "a", "title": "Market", "text": story(7)}) + "\n")
    (corpus / "stays.md").write_text("# Stays\n\n" + story(3) + "\n")
    run("index")
    (corpus / "sub").mkdir()
    (corpus / "old.txt").rename(corpus / "sub" / "new.txt")
    (corpus / "feed.jsonl").rename(corpus / "wire.jsonl")
    output = run("index")
    assert "renamed: feed.jsonl -> wire.jsonl" in output and "renamed: old.txt -> sub/new.txt" in output
    assert "0 added, 0 changed, 0 removed, 2 renamed, 1 unchanged" in output and "0 passages embedded" in output
    assert keys(run) == ["stays.md", "sub/new.txt", "wire.jsonl#a"]
    answer = run("ask", "--json", "harbour project approved")
    assert answer["results"][0]["path"] == "sub/new.txt"
    report = run("index", "--json")
    assert report["renamed"] == [] and sorted(report["unchanged"]) == keys(run)


def test_a_renamed_file_as_json_report(run, corpus):
    (corpus / "a.txt").write_text("Harbour plan\n\n" + story(0) + "\n")
    run("index")
    (corpus / "a.txt").rename(corpus / "b.txt")
    report = run("index", "--json")
    assert report["renamed"] == [{"from": "a.txt", "to": "b.txt"}]
    assert (report["added"], report["removed"], report["passages_embedded"]) == ([], [], 0)


def test_a_copy_beside_its_original_is_indexed_once_in_a_fresh_build_and_incrementally(run, corpus):
    text = "Harbour plan\n\n" + story(0) + "\n"
    (corpus / "a.txt").write_text(text)
    (corpus / "b.txt").write_text(text)
    first = run("index", "--json")
    assert first["skipped"] == [
        {"path": "b.txt", "reason": "duplicate of a.txt (same text and metadata): indexed once"}
    ]
    (corpus / "c.txt").write_text(text)
    second = run("index", "--json")
    assert {s["path"]: s["reason"] for s in second["skipped"]} == {
        "b.txt": "duplicate of a.txt (same text and metadata): indexed once",
        "c.txt": "duplicate of a.txt (same text and metadata): indexed once",
    }
    assert keys(run) == ["a.txt"] and second["passages_embedded"] == 0


def test_the_same_story_from_two_outlets_is_indexed_twice_and_shown_once(run, corpus):
    body = story(0) + "\n\n" + story(10) + "\n"
    (corpus / "post.md").write_text("---\ntitle: Harbour plan\nsource: Riverside Post\n---\n\n" + body)
    run("index")
    (corpus / "wire.md").write_text("---\ntitle: Harbour plan approved\nsource: Valley Wire\n---\n\n" + body)
    report = run("index", "--json")
    assert report["added"] == ["wire.md"] and report["passages_embedded"] == 0 and not report["skipped"]
    # a fresh build gives the same index
    fresh = run("index", "--rebuild", "--json")
    assert fresh["skipped"] == [] and keys(run) == ["post.md", "wire.md"]
    output = run("ask", "harbour project number 0 approved")
    assert output.count(f"> {story(0)}") == 1 and output.count(f"> {story(10)}") == 1
    shown = output.split("\n\n")[1]  # the first result: one outlet, and the other under "also in"
    assert ("Valley Wire · " in shown and "also in: Riverside Post" in shown) or (
        "Riverside Post · " in shown and "also in: Valley Wire" in shown
    )
    first = run("ask", "harbour project number 0 approved", "--json")["results"][0]
    assert [(o["source"], o["path"]) for o in first["also_in"]] == (
        [("Riverside Post", "post.md")] if first["source"] == "Valley Wire" else [("Valley Wire", "wire.md")]
    )


def test_a_rename_that_fails_to_commit_leaves_the_index_as_it_was(run, corpus, monkeypatch):
    from embeddings import store

    (corpus / "a.txt").write_text("Harbour plan\n\n" + story(0) + "\n")
    (corpus / "b.txt").write_text("Bridge plan\n\n" + story(2) + "\n")
    run("index")
    (corpus / "a.txt").rename(corpus / "c.txt")

    def fail(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(store, "record_run", fail)
    with pytest.raises(OSError):
        CliRunner().invoke(
            cli, ["index"], env={"CORPUS_DIR": str(corpus), "INDEX_PATH": str(run.index_path)}, catch_exceptions=False
        )
    assert keys(run) == ["a.txt", "b.txt"]
    monkeypatch.undo()
    use_embedder(monkeypatch, None)  # a rename needs no model
    assert "renamed: a.txt -> c.txt" in run("index") and keys(run) == ["b.txt", "c.txt"]


def test_stored_vectors_are_reused_only_from_whole_undamaged_blobs(fake_settings):
    from embeddings import store
    from embeddings.index import run_index
    from embeddings.migrations import embedded_hash

    run_index(fake_settings)
    conn = store.connect_for_writing(fake_settings.index_path)
    try:
        rows = conn.execute(
            "SELECT a.id, p.text FROM passages p JOIN articles a ON a.id = p.article_id ORDER BY a.id, p.position"
        ).fetchall()
        first_id, last_id = rows[0][0], rows[-1][0]
        hashes = {
            article_id: [embedded_hash(t) for i, t in rows if i == article_id] for article_id in (first_id, last_id)
        }
        conn.execute(
            "UPDATE article_vectors SET vectors = substr(vectors, 1, length(vectors) - 2) WHERE article_id = ?",
            (first_id,),
        )
        found = store.vectors_by_embedded_hash(conn, hashes[first_id] + hashes[last_id], 256)
    finally:
        conn.close()
    assert set(found) == set(hashes[last_id]) - set(hashes[first_id])
    assert all(abs(float(v @ v) - 1) < 0.01 and v.dtype.name == "float32" for v in found.values())
