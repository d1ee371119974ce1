"""File names are untrusted input: bytes that are not UTF-8 cannot become an article's key (every
run failed at commit), and a newline or an escape sequence in a name must not fake a line of the
report or drive a terminal. Figures: docs/reliability.md."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess

import pytest
from click.testing import CliRunner

from bot.cli import cli
from embeddings.config import Settings
from embeddings.index import run_index

BODY = "Title {0}\n\nThe council said on Tuesday that the bridge named {0} would open to traffic next month.\n"
FAKE_LINE = "skipped evil.txt: this line was written by a file name"
NAMES = {  # name as bytes -> the same name as the report shows it
    b"caf\xe9.txt": "caf\\xe9.txt",
    f"x\n{FAKE_LINE}\n.txt".encode(): f"x\\n{FAKE_LINE}\\n.txt",
    b"clear\x1b[2J\x1b]0;title\x07.txt": "clear\\x1b[2J\\x1b]0;title\\x07.txt",
    b"csi\xc2\x9b31m.txt": "csi\\x9b31m.txt",  # U+009B: a one-character CSI to some terminals
}


def make_corpus(root):
    corpus = root / "corpus"
    corpus.mkdir()
    for n, name in enumerate([b"good.txt", *NAMES]):
        with open(os.path.join(os.fsencode(corpus), name), "wb") as f:
            f.write(BODY.format(f"number {n}").encode())
    return corpus


def test_a_name_that_is_not_utf8_is_skipped_with_one_escaped_line_and_every_run_completes(tmp_path, fake_embedder):
    corpus = make_corpus(tmp_path)
    settings = Settings(corpus_dir=corpus, index_path=tmp_path / "index.sqlite3", embedding_model=fake_embedder.name)
    for run in range(2):  # it failed every run, forever, at commit (UnicodeEncodeError)
        report = run_index(settings)
        assert report.skipped == [("caf\\xe9.txt", "the file name is not valid UTF-8; rename the file")]
        assert "skipped caf\\xe9.txt: the file name is not valid UTF-8; rename the file" in report.lines()
        assert len(report.added if run == 0 else report.unchanged) == 4
    with sqlite3.connect(settings.index_path) as conn:
        keys = {k for (k,) in conn.execute("SELECT key FROM articles")}
        (stored,) = conn.execute("SELECT report FROM index_runs ORDER BY id DESC LIMIT 1").fetchone()
    assert keys == {"good.txt", *(n.decode() for n in NAMES if n != b"caf\xe9.txt")}
    assert json.loads(stored)["skipped"] == [
        {"path": "caf\\xe9.txt", "reason": "the file name is not valid UTF-8; rename the file"}
    ]


def test_names_with_newlines_and_escapes_are_shown_escaped_in_every_output(tmp_path, fake_embedder):
    corpus = make_corpus(tmp_path)
    (corpus / "dangling.txt").symlink_to("\x1b]8;;http://evil\x07missing\nskipped fake.txt: gone")
    index = tmp_path / "index\x1b[2J.sqlite3"  # the operator's names are shown escaped too
    env = {
        "CORPUS_DIR": str(corpus),
        "INDEX_PATH": str(index),
        "EMBEDDING_MODEL": fake_embedder.name,
        "RERANK_MODEL": "",
    }
    runner = CliRunner()

    text = runner.invoke(cli, ["index", "--rebuild"], env=env, catch_exceptions=False)
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    # One summary line, one line per added and per skipped file: no name or reason adds a line of its own.
    assert len(lines) == 7 and lines[0].startswith("4 added,")
    assert all(line.startswith("added ") for line in lines[1:5])
    assert lines[5] == "skipped caf\\xe9.txt: the file name is not valid UTF-8; rename the file"
    assert lines[6] == (
        "skipped dangling.txt: dangling symlink (target \\x1b]8;;http://evil\\x07missing\\n"
        "skipped fake.txt: gone does not exist)"
    )
    assert FAKE_LINE not in lines and "\x1b" not in text.stdout

    as_json = runner.invoke(cli, ["index", "--json"], env=env, catch_exceptions=False)
    report = json.loads(as_json.stdout)  # JSON keeps the real names, JSON-escaped
    assert sorted(report["unchanged"]) == sorted(["good.txt", *(n.decode() for n in NAMES if n != b"caf\xe9.txt")])
    assert "\x1b" not in as_json.stdout and "\x9b" not in as_json.stdout and len(as_json.stdout.splitlines()) == 1

    sources = runner.invoke(cli, ["sources"], env=env, catch_exceptions=False)
    for shown in list(NAMES.values())[1:]:
        assert f" · {shown}" in sources.stdout
    assert (
        FAKE_LINE not in sources.stdout.splitlines() and "\x1b" not in sources.stdout and "\x9b" not in sources.stdout
    )
    assert len(sources.stdout.splitlines()) == 2 * 4

    stats = runner.invoke(cli, ["stats"], env=env, catch_exceptions=False)
    assert stats.exit_code == 0 and "2 skipped" in stats.stdout and "\x1b" not in stats.stdout
    assert "index\\x1b[2J.sqlite3" in stats.stdout

    index.unlink()
    missing = runner.invoke(cli, ["ask", "bridge"], env=env)
    assert missing.exit_code == 1 and "index\\x1b[2J.sqlite3" in missing.stderr and "\x1b" not in missing.stderr


def test_the_bots_reindex_report_and_stats_show_one_line_per_problem():
    from bot.render import report_embed, stats_embed
    from embeddings.index import IndexReport

    report = IndexReport(
        added=["good.txt"], skipped=[(f"x\n{FAKE_LINE}\n.txt", "bad\nreason")], warnings=[("y\x1b[8m.txt", "w")]
    )
    description = report_embed(report).description
    assert len(description.splitlines()) == 3  # the summary, one bullet per problem
    assert all(line.startswith("- ") for line in description.splitlines()[1:]) and "\x1b" not in description
    run = {"finished": None, "seconds": 0, "report": report.to_json()}
    stats = stats_embed({"articles": 1, "passages": 1}, run, serving=None, job_line=None).to_dict()
    [last] = [f["value"] for f in stats["fields"] if f["name"] == "Last re-index"]
    assert len(last.splitlines()) == 3 and last.splitlines()[2].startswith("- x")  # when, counts, one bullet


def test_a_folder_that_cannot_be_read_is_named_and_its_indexed_articles_are_kept(fake_settings, tmp_path):
    """Before, os.walk passed over it in silence and its articles were reported removed."""
    from tests.test_reliability_core import env_for, harness, without_root_powers

    sub = fake_settings.corpus_dir / "sub"
    sub.mkdir()
    for name in ("a.txt", "b.txt"):
        (sub / name).write_text(BODY.format(name))
    assert len(run_index(fake_settings).added) == 7
    sub.chmod(0)
    try:  # `corpus-bot index` in a child without root's power to read anything (as the bot's user)
        result = harness(
            tmp_path,
            "index",
            env=env_for(fake_settings),
            preexec_fn=without_root_powers() if os.geteuid() == 0 else None,
        )
    except subprocess.SubprocessError as exc:
        pytest.skip(f"cannot drop root's permission override here: {exc}")
    finally:
        sub.chmod(0o755)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("0 added, 0 changed, 0 removed, 7 unchanged, 1 skipped")
    assert (
        "skipped sub/: cannot read the folder: Permission denied; its 2 indexed files are kept"
        in result.stdout.splitlines()
    )
