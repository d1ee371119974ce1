"""Corpus text and metadata never drive the terminal: escape sequences reach `ask`, `sources`,
`stats` and `index` as visible escapes, and JSON keeps them, JSON-escaped. Figures and rows:
docs/reliability.md."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from bot.cli import cli
from embeddings.cli import render_answer
from embeddings.config import Settings
from embeddings.index import run_index
from embeddings.search import SearchIndex
from embeddings.terminal import json_line, one_line, text_block

CLEAR = "\x1b[2J\x1b[H"  # clear the screen, cursor home
TITLE = "\x1b]0;owned\x07"  # set the window title
LINK = "\x1b]8;;https://evil.example/\x1b\\the council\x1b]8;;\x1b\\"  # a hyperlink whose target is hidden
CONCEALED = "\x1b[8mconcealed\x1b[28m"
CSI_8BIT = "\x9b31m"  # U+009B: a one-character CSI to some terminals
SIDECAR = {"author": f"Jane {CSI_8BIT}Doe", "source": f"Daily {CLEAR}News"}
ARTICLE = (
    f"Bridge {TITLE} opens\n\n"
    f"{CLEAR}The bridge across the river opens next month, {LINK} said on Tuesday after years of delays.\n"
    f"The mayor added {CONCEALED} words\tafter a tab, and the vote was close.\n\n"
    "A second paragraph about the bridge gives the cost of the works and the traffic it will carry.\n"
)
RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\r")


@pytest.fixture
def env(tmp_path, fake_embedder):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "bridge\x1b[5m.txt").write_text(ARTICLE)
    (corpus / "bridge\x1b[5m.meta.json").write_text(json.dumps(SIDECAR))
    settings = Settings(corpus_dir=corpus, index_path=tmp_path / "index.sqlite3", embedding_model=fake_embedder.name)
    run_index(settings)
    return {
        "CORPUS_DIR": str(corpus),
        "INDEX_PATH": str(settings.index_path),
        "EMBEDDING_MODEL": fake_embedder.name,
        "RERANK_MODEL": "",
        "WEAK_SCORE": "0",
    }


def run(env, *args):
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_ask_shows_escape_sequences_from_the_corpus_and_never_emits_them(env):
    out = run(env, "ask", "when does the bridge open", "-k", "2")
    assert not any(c in out for c in RAW_CONTROLS), repr(out)
    assert "\\x1b[2J\\x1b[HThe bridge across" in out and "\\x1b]8;;https://evil.example/" in out
    assert "Bridge \\x1b]0;owned\\x07 opens" in out and "By Jane \\x9b31mDoe" in out and "bridge\\x1b[5m.txt" in out
    quoted = [line for line in out.splitlines() if line.startswith("   > ")]
    # the quote keeps its line break; the tab is expanded to spaces
    assert "   > The mayor added \\x1b[8mconcealed\\x1b[28m words  after a tab, and the vote was close." in quoted


def test_json_keeps_the_characters_json_escaped(env):
    out = run(env, "ask", "when does the bridge open", "-k", "2", "--json")
    assert not any(c in out for c in RAW_CONTROLS) and len(out.splitlines()) == 1
    results = json.loads(out)["results"]
    assert any(r["text"].startswith(CLEAR + "The bridge") and LINK in r["text"] for r in results)
    assert results[0]["title"] == f"Bridge {TITLE} opens" and results[0]["authors"] == [f"Jane {CSI_8BIT}Doe"]
    [article] = json.loads(run(env, "sources", "--json"))["articles"]
    assert article["path"] == "bridge\x1b[5m.txt" and article["source"] == f"Daily {CLEAR}News"


def test_sources_stats_and_index_show_metadata_escaped(env):
    for args in (["sources"], ["stats"], ["index", "--rebuild"]):
        out = run(env, *args)
        assert not any(c in out for c in RAW_CONTROLS), (args, out)
    sources = run(env, "sources").splitlines()
    assert sources[0] == "Bridge \\x1b]0;owned\\x07 opens" and "Daily \\x1b[2J\\x1b[HNews" in sources[1]


def test_the_highlighted_answer_on_a_colour_terminal_is_escaped_too(env, fake_embedder):
    index = SearchIndex.load(Settings.from_env(env).index_path, model_name=fake_embedder.name, weak_score=0)
    try:
        answer = index.search("bridge river opens month council Tuesday", fake_embedder, k=1, mode="vector")
    finally:
        index.close()
    assert answer.results[0].highlight
    shown = render_answer(answer, color=True)
    assert "\x1b[1m" in shown  # our own bold remains
    assert "\x1b[2J" not in shown and "\x1b]" not in shown and "\x07" not in shown


@given(st.text(st.characters(exclude_categories=())))  # lone surrogates included
def test_one_line_output_has_no_control_character_and_json_round_trips(text):
    shown = one_line(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in shown)
    assert one_line(shown) == shown  # escaping twice changes nothing (reasons are escaped once stored)
    assert all(line == one_line(line) for line in text_block(text).replace("\t", " ").split("\n"))
    encoded = json_line({"t": text})
    assert json.loads(encoded) == {"t": text}
    assert not any(0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" or 0xD800 <= ord(c) <= 0xDFFF for c in encoded)
