"""The corpus-bot CLI in-process (click's runner) with the fake embedder: output shapes and messages."""
import json

import pytest
from click.testing import CliRunner

from bot.cli import cli

ASK_KEYS = {"query", "results", "weak", "excluded_undated", "offset", "has_more"}
RESULT_KEYS = {"rank", "score", "relevance", "weak", "text", "title", "source", "authors", "date", "path", "position",
               "article_passages", "highlight"}
SOURCE_KEYS = {"path", "title", "source", "authors", "published", "updated", "url", "passages"}
STATS_KEYS = {"articles", "passages", "model", "dimension", "size_bytes", "built", "keyword_search", "vectors_from",
              "damaged_vectors"}


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


def test_index_prints_a_report_and_is_incremental(run):
    first = run("index")
    assert first.exit_code == 0
    assert "5 added, 0 changed, 0 removed, 0 unchanged, 0 skipped" in first.output
    second = run("index", "--json")
    report = json.loads(second.output)
    assert report["unchanged"] and report["passages_embedded"] == 0


def test_index_shows_each_stage_of_a_large_index_as_it_starts(run, monkeypatch):
    """The steps after the commit take seconds at 1M passages: a new stage is shown at once, not
    after the few-second interval between progress lines."""
    monkeypatch.setattr("embeddings.derived.LARGE_INDEX", 1)
    result = run("index")
    assert "vector file: writing 69 passages' vectors" in result.output  # click's runner mixes stderr in


def test_ask_json_has_exactly_the_documented_shape(run):
    run("index")
    result = run("ask", "Kunduz provincial council member bullets", "--json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert set(data) == ASK_KEYS
    assert data["query"] == "Kunduz provincial council member bullets"
    assert data["results"] and all(set(r) == RESULT_KEYS for r in data["results"])
    top = data["results"][0]
    assert "sound of bullets" in top["text"]
    assert top["path"] == "001_d4691cda91f5b4eb.txt" and top["date"] == "2021-06-20"
    assert top["authors"] == ["Thomas Gibbons-Neff", "Najim Rahim"]
    assert 1 <= top["position"] <= top["article_passages"]
    assert isinstance(data["weak"], bool) and data["excluded_undated"] == 0


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
    shown = [float(line.split("[")[1].split("]")[0].split()[0]) for line in text.splitlines() if line[:3] in ("1. ", "2. ", "3. ")]
    assert shown == pytest.approx([r["relevance"] for r in seen[:3]], abs=0.0051)


def test_ask_text_output_is_readable(run):
    run("index")
    out = run("ask", "Ahmed Shah Massoud", "-k", "2").output
    assert out.startswith("Q: Ahmed Shah Massoud")
    assert "1. [" in out and "By Sharif Hassan · Aug 9, 2021 · paragraph " in out
    assert "   > " in out and "2. [" in out and "3. [" not in out


def test_ask_reads_one_question_per_line_from_stdin(run):
    run("index")
    out = run("ask", "-", "--json", input="Kunduz bullets\n\nAhmed Shah Massoud\n").output
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


def test_missing_index_says_to_run_index(run):
    for command in (["ask", "anything"], ["sources"], ["stats"]):
        result = run(*command)
        assert result.exit_code == 1
        assert "run `corpus-bot index`" in result.output


def test_sources_json_shape_and_metadata(run):
    run("index")
    data = json.loads(run("sources", "--json").output)
    assert set(data) == {"articles"}
    articles = {a["path"]: a for a in data["articles"]}
    assert all(set(a) == SOURCE_KEYS for a in articles.values())
    assert articles["001_d4691cda91f5b4eb.txt"]["published"] == "2021-06-20"
    assert articles["001_d4691cda91f5b4eb.txt"]["updated"] == "2021-08-06"
    assert articles["004_df801900fabe096f.txt"]["source"] == "Antiwar.com"
    assert articles["002_19231adb1c3244eb.txt"]["published"] is None
    assert "undated" in run("sources").output


def test_stats_json_shape(run, fake_settings):
    run("index")
    data = json.loads(run("stats", "--json").output)
    assert set(data) == STATS_KEYS
    assert data["articles"] == 5 and data["passages"] > 25
    assert data["model"] == fake_settings.embedding_model and data["dimension"] == 256
    assert data["size_bytes"] > 0 and data["built"] and data["keyword_search"] == "fts5"
    assert data["vectors_from"] == "sqlite" and data["damaged_vectors"] == []
    assert "last run:" in run("stats").output


def test_model_mismatch_is_one_clear_line_naming_both_models(run):
    run("index")
    for command in (["index"], ["ask", "Taliban"]):
        result = run(*command, EMBEDDING_MODEL="other-model")
        assert result.exit_code == 1
        assert "'fake-hash-embedder'" in result.output and "'other-model'" in result.output
        assert "Traceback" not in result.output
