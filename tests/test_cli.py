"""The corpus-bot CLI in-process (click's runner) with the fake embedder: output shapes and messages."""

import json
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from bot.cli import cli

ASK_KEYS = {"query", "results", "weak", "excluded_undated", "offset", "has_more"}
RESULT_KEYS = {
    "rank",
    "score",
    "relevance",
    "weak",
    "text",
    "title",
    "source",
    "authors",
    "date",
    "path",
    "position",
    "article_passages",
    "highlight",
    "also_in",
}
SOURCE_KEYS = {"path", "title", "source", "authors", "published", "updated", "url", "passages"}
STATS_KEYS = (  # in the documented order
    "articles",
    "passages",
    "model",
    "dimension",
    "size_bytes",
    "built",
    "keyword_search",
    "vectors_from",
    "damaged_vectors",
    "corpus_dir",
    "index_path",
    "last_run",
)


@pytest.fixture
def run(fake_settings):
    env = {
        "CORPUS_DIR": str(fake_settings.corpus_dir),
        "INDEX_PATH": str(fake_settings.index_path),
        "EMBEDDING_MODEL": fake_settings.embedding_model,
        "WEAK_SCORE": "0.2",
    }

    def invoke(*args, input=None, **overrides):
        return CliRunner().invoke(cli, list(args), env={**env, **overrides}, input=input, catch_exceptions=False)

    return invoke


def test_index_shows_each_stage_of_a_large_index_as_it_starts(run, monkeypatch):
    """The steps after the commit take seconds at 1M passages: a new stage is shown at once, not
    after the few-second interval between progress lines."""
    monkeypatch.setattr("embeddings.derived.LARGE_INDEX", 1)
    result = run("index")
    assert "vector file: writing 69 passages' vectors" in result.output  # click's runner mixes stderr in


def test_ask_pages_with_offset_through_every_passage_of_the_matching_articles(run):
    """-k and --offset page through the whole order, in JSON and in text: no passage twice, none
    left out, the relevance shown never rising; one article filtered in gives as many as asked."""
    run("index")
    seen, offset = [], 0
    while True:
        data = json.loads(run("ask", "Taliban districts", "-k", "20", "--offset", str(offset), "--json").output)
        assert data["offset"] == offset and [r["rank"] for r in data["results"]][0] == offset + 1
        seen += data["results"]
        if not data["has_more"]:
            break
        offset += 20
    sources = json.loads(run("sources", "--json").output)["articles"]
    assert len({(r["path"], r["position"]) for r in seen}) == len(seen) == sum(a["passages"] for a in sources)
    assert all(a["relevance"] >= b["relevance"] for a, b in zip(seen, seen[1:]))
    assert any(a["score"] < b["score"] for a, b in zip(seen, seen[1:]))  # the cosine alone is not the order
    antiwar = json.loads(run("ask", "Taliban districts", "--source", "antiwar", "-k", "3", "--json").output)
    assert len(antiwar["results"]) == 3 and {r["source"] for r in antiwar["results"]} == {"Antiwar.com"}
    text = run("ask", "Taliban districts", "-k", "3").output
    assert text.rstrip().endswith("(more: --offset 3)")
    shown = [
        float(line.split("[")[1].split("]")[0].split()[0])
        for line in text.splitlines()
        if line[:3] in ("1. ", "2. ", "3. ")
    ]
    assert shown == pytest.approx([r["relevance"] for r in seen[:3]], abs=0.0051)


def test_ask_text_output_is_readable(run):
    run("index")
    out = run("ask", "Ahmed Shah Massoud", "-k", "2").output
    assert out.startswith("Q: Ahmed Shah Massoud")
    assert "1. [" in out and "By Sharif Hassan · Aug 9, 2021 · paragraph " in out
    assert "   > " in out and "2. [" in out and "3. [" not in out


def test_ask_reads_one_question_per_line_from_stdin(run):
    run("index")
    out = run("ask", "-", "--json", input="Kunduz bullets\nAhmed Shah Massoud\n").output
    lines = out.strip().splitlines()
    assert [json.loads(line)["query"] for line in lines] == ["Kunduz bullets", "Ahmed Shah Massoud"]


def test_ask_filters_and_undated_count(run):
    run("index")
    data = json.loads(run("ask", "Taliban", "--since", "2021-08-01", "--json").output)
    assert {r["date"] for r in data["results"]} == {"2021-08-09"}
    assert data["excluded_undated"] == 3
    text = run("ask", "Taliban", "--since", "2021-08-01").output
    assert "3 undated articles left out by the date filter." in text
    data = json.loads(run("ask", "Taliban", "--source", "antiwar", "--json").output)
    assert {r["source"] for r in data["results"]} == {"Antiwar.com"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--since", "9 August"], "--since '9 August' is not a date in YYYY-MM-DD form"),
        (["--since", "2021-09-01", "--until", "2021-01-01"], "is after --until"),
        (["-k", "50"], "50 is not in the range 1<=x<=20"),
    ],
)
def test_bad_options_get_one_clear_line(run, args, message):
    run("index")
    result = run("ask", "Taliban", *args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_model_mismatch_is_one_clear_line_naming_both_models(run):
    run("index")
    for command in (["index"], ["ask", "Taliban"]):
        result = run(*command, EMBEDDING_MODEL="other-model")
        assert result.exit_code == 1
        assert "'fake-hash-embedder'" in result.output and "'other-model'" in result.output
        assert "Traceback" not in result.output


# ---------------------------------------------------------------- settings follow the working directory


def test_stats_shows_the_corpus_and_index_a_dotenv_in_the_working_directory_names(
    run, fake_settings, tmp_path, monkeypatch
):
    run("index")
    (tmp_path / ".env").write_text("CORPUS_DIR=corpus\nINDEX_PATH=data/index.sqlite3\n")
    monkeypatch.chdir(tmp_path)
    result = run("stats", "--json", CORPUS_DIR=None, INDEX_PATH=None)  # only .env names them
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["articles"] == 5
    assert (data["corpus_dir"], data["index_path"]) == (
        str(tmp_path / "corpus"),
        str(tmp_path / "data" / "index.sqlite3"),
    )


# ---------------------------------------------------------------- command-line habits


def test_a_question_needs_no_quotes(run):
    run("index")
    data = json.loads(run("ask", "Kunduz", "provincial", "council", "bullets", "--json").output)
    assert data["query"] == "Kunduz provincial council bullets"
    assert data["results"][0]["path"] == "001_d4691cda91f5b4eb.txt"
    text = run("ask", "Ahmed", "Shah", "-k", "1", "Massoud").output  # options may come between the words
    assert text.startswith("Q: Ahmed Shah Massoud\n") and "2. [" not in text


def test_a_question_starting_with_a_minus_is_not_an_option(run):
    run("index")
    for args, query in [
        (["-4", "degrees", "in", "Kunduz"], "-4 degrees in Kunduz"),
        (["-4 degrees in Kunduz", "--json"], "-4 degrees in Kunduz"),
        (["--json", "-k", "2", "--", "-x", "Taliban"], "-x Taliban"),
    ]:
        result = run("ask", "--json", *args)
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert data["query"] == query and data["results"]
    typo = run("ask", "-x", "Taliban")  # an unknown option is still an error, not a question word
    assert typo.exit_code == 2 and "No such option '-x'" in typo.output and "put -- before the question" in typo.output
    assert "`--`" in run("ask", "--help").output


def test_the_number_of_results_is_spelled_the_same_for_ask_and_eval(run, tmp_path):
    from tests.test_evaluate import BEIR_FIXTURE

    for spelling in ("-k", "--results", "--k"):  # --k: the former spelling for eval, kept working
        result = run(
            "eval", str(BEIR_FIXTURE), spelling, "3", "--json", INDEX_PATH=str(tmp_path / "eval" / "i.sqlite3")
        )
        assert result.exit_code == 0, result.output
        assert "ndcg@3" in json.loads(result.output)
    assert "-k, --results" in run("eval", "--help").output and "--k " not in run("eval", "--help").output
    assert "-k, --results" in run("ask", "--help").output


@pytest.mark.parametrize("question", ["?!?", "🤔🤔", "… — !", "*"])
def test_a_question_without_words_is_refused_with_a_reason(run, question):
    run("index")
    result = run("ask", question)
    assert result.exit_code == 1 and "the question has no words" in result.output
    assert "1. [" not in result.output


def test_one_is_singular(run, fake_settings):
    (fake_settings.corpus_dir / "short.txt").write_text("A short note\n\nThe council met on Monday in Kunduz.\n")
    out = run("index").output
    assert ", 6 articles," in out or "index: 6 articles" in out
    sources = run("sources").output
    assert "· 1 passage · short.txt" in sources and "1 passages" not in sources
    (fake_settings.corpus_dir / "short.txt").write_text("A short note\n\nThe council met on Tuesday in Kunduz.\n")
    assert "; 1 passage embedded in " in run("index").output


def test_version(run):
    result = run("--version")
    assert result.exit_code == 0 and "version" in result.output


def test_help_imports_no_model_or_array_code_and_answers_quickly():
    """--help, and option errors, must not wait for numpy, torch or the model (seconds on a cold disk)."""
    code = (
        "import sys; from bot.cli import main; sys.argv = ['corpus-bot', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('numpy', 'torch', 'sentence_transformers', 'discord', 'faiss') if m in sys.modules)\n"
        "print('HEAVY', heavy)"
    )
    env = {**os.environ, "PYTHONPATH": str(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
        best = min(best, time.perf_counter() - start)
        assert "HEAVY []" in out and "Usage: corpus-bot" in out
    assert best < 1.0  # loose: the import check above is the exact one; this catches a large regression


def test_ask_from_stdin_writes_one_line_per_input_line(run):
    run("index")
    lines = run("ask", "-", "--json", input="Kunduz bullets\n\n?!\nAhmed Shah Massoud\n").output.strip().split("\n")
    assert len(lines) == 4
    out = [json.loads(line) for line in lines]
    assert [o["query"] for o in out] == ["Kunduz bullets", "", "?!", "Ahmed Shah Massoud"]
    assert out[1]["error"] == "the question is empty" and "no words" in out[2]["error"]
    assert out[0]["results"] and out[3]["results"]


def test_the_index_report_names_the_files(run, fake_settings):
    first = run("index").output.splitlines()
    assert "added 001_d4691cda91f5b4eb.txt" in first and "added 004_df801900fabe096f.txt" in first
    corpus = fake_settings.corpus_dir
    (corpus / "001_d4691cda91f5b4eb.txt").write_text(
        (corpus / "001_d4691cda91f5b4eb.txt").read_text() + "\nOne more line.\n"
    )
    (corpus / "002_19231adb1c3244eb.txt").unlink()
    (corpus / "bad.json").write_text("{")
    second = run("index").output.splitlines()
    assert "changed 001_d4691cda91f5b4eb.txt" in second and "removed 002_19231adb1c3244eb.txt" in second
    assert any(line.startswith("skipped bad.json: ") for line in second)
    assert not any(line.startswith("added ") for line in second)  # unchanged files are only counted


def test_feedback_export_refuses_an_existing_file_or_a_folder_in_use(run, tmp_path):
    run("index")
    existing = tmp_path / "votes.txt"
    existing.write_text("keep me")
    result = run("feedback", "export", str(existing))
    assert result.exit_code == 1 and "exists and is not a folder" in result.output and "Traceback" not in result.output
    assert existing.read_text() == "keep me"
    used = tmp_path / "eval-set"
    used.mkdir()
    (used / "queries.jsonl").write_text('{"_id": "q1", "text": "hand-written"}\n')
    result = run("feedback", "export", str(used))
    assert result.exit_code == 1 and "is not empty" in result.output
    assert (used / "queries.jsonl").read_text() == '{"_id": "q1", "text": "hand-written"}\n'
    assert sorted(p.name for p in used.iterdir()) == ["queries.jsonl"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("feedback", "export", str(empty)).exit_code == 0
    assert (empty / "qrels.tsv").exists()
