"""Hostile and broken input: a corpus built to break the indexer, any bytes through parse + chunk,
and questions built to break `corpus-bot ask`. Fake embedder throughout, except the last test,
which puts the hostile questions through the real model's tokenizer. Figures: docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.cli import cli
from embeddings.chunk import make_passages
from embeddings.config import Settings
from embeddings.index import run_index
from embeddings.parse import SUPPORTED_SUFFIXES, SkipFile, load_file, parse_file
from tests.helpers import SHIPPED_CORPUS, FakeEmbedder, use_embedder
from tests.test_chunk import assert_verbatim_slices

SHIPPED = sorted(p.name for p in SHIPPED_CORPUS.iterdir())
SECRET = "OUTSIDE-THE-CORPUS-7f3a"
PARAGRAPH = (
    "Officials in the province said on Tuesday that the new bridge would open to traffic next month, after delays."
)


def article(title: str, *paragraphs: str) -> str:
    return title + "\n\n" + "\n\n".join(paragraphs) + "\n"


def build_hostile_corpus(root: Path) -> tuple[Path, dict[str, str | None]]:
    """The corpus folder and, for each file, the skip reason expected (a fragment), or None when it
    must be indexed, or "either" for pathological-but-text files (indexed or skipped, never a crash)."""
    corpus = root / "corpus"
    corpus.mkdir()
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(
        article("Secret", f"{SECRET} must never be indexed, whatever links to it here.")
    )
    for name in SHIPPED:
        (corpus / name).write_bytes((SHIPPED_CORPUS / name).read_bytes())

    expected: dict[str, str | None] = {name: None for name in SHIPPED}

    def put(name: str, data: bytes | str, outcome: str | None) -> None:
        path = corpus / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        expected[name] = outcome

    # Good files in awkward encodings and places.
    put("utf16_bom.txt", article("Sixteen bits", "The UTF-16 article says " + PARAGRAPH).encode("utf-16"), None)
    put(
        "utf8_bom.md",
        "\ufeff---\ntitle: With a BOM\ndate: 2021-08-09\n---\n\nThe BOM article says " + PARAGRAPH + "\n",
        None,
    )
    put("undated.txt", article("No date at all", "The undated article says " + PARAGRAPH), None)
    put(
        "latin1.txt",
        article("Caf\xe9", "Une phrase en fran\xe7ais, assez longue pour faire un paragraphe.").encode("latin-1"),
        None,
    )
    put(
        "nonsense_date.md",
        "---\ntitle: Impossible date\ndate: 2021-02-30\n---\n\nThe nonsense-date article says " + PARAGRAPH + "\n",
        None,
    )
    put(
        "deep/er/still/nested.html",
        "<html><head><title>Nested folder</title></head><body><article><p>The HTML article says "
        + PARAGRAPH
        + "</p><p>A second paragraph of the HTML article, with enough words to stand alone.</p></article></body></html>",
        None,
    )
    # Bad files.
    put(
        "damaged_utf8.txt",
        article("Caf\xe9", "Une phrase en fran\xe7ais, assez longue pour faire un paragraphe.").encode()
        + b"\xff\xfe broken",
        "not UTF-8",
    )
    put("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8, "binary file (PNG image)")
    put("empty.txt", b"", "empty file")
    put("blank.md", " \n\t\n   \r\n" * 100, "whitespace-only")
    put("copy_of_first.txt", (SHIPPED_CORPUS / SHIPPED[0]).read_bytes(), f"duplicate of {SHIPPED[0]}")
    with open(corpus / "huge.txt", "wb") as f:  # 50 MB of real text, not a sparse file
        line = (PARAGRAPH + "\n").encode()
        f.write(line * (50 * 1024 * 1024 // len(line) + 1))
    expected["huge.txt"] = "larger than the 10 MB limit (50 MB)"
    # Links and special files.
    os.symlink("/etc/passwd", corpus / "passwd.txt")
    expected["passwd.txt"] = "symlink pointing outside the corpus folder"
    os.symlink("../outside/secret.txt", corpus / "outside.txt")
    expected["outside.txt"] = "symlink pointing outside the corpus folder"
    os.symlink("self.txt", corpus / "self.txt")
    expected["self.txt"] = "symlink loop"
    os.symlink("missing.txt", corpus / "dangling.txt")
    expected["dangling.txt"] = "dangling symlink"
    os.symlink("../outside", corpus / "outside_dir")  # a linked folder is not walked into, only reported
    expected["outside_dir/"] = "a symlink to a folder, not followed"
    os.mkfifo(corpus / "pipe.txt")  # opening it would block forever
    expected["pipe.txt"] = "not a regular file"
    # Pathological markup.
    put(
        "nested_divs.html",
        "<html><head><title>Deep</title></head><body>"
        + "<div>" * 5000
        + "<p>The deeply nested article says "
        + PARAGRAPH
        + "</p>"
        + "</div>" * 5000
        + "</body></html>",
        "either",
    )
    put("stars.md", "# Stars\n\n" + "*" * 100_000, "either")
    put("brackets.md", "# Brackets\n\n" + "[" * 100_000, "either")
    put("emphasis_soup.md", "# Soup\n\n" + "*_[`(" * 20_000, "either")
    put("blockquotes.md", "# Quotes\n\n" + ">" * 20_000 + " The quoted article says " + PARAGRAPH + "\n", "either")
    put(
        "lists.md",
        "# Lists\n\n" + "".join("  " * i + f"- item {i} of a list nested far too deep\n" for i in range(2000)),
        "either",
    )
    put("brackets.txt", "Brackets\n\n" + "(" * 100_000, "either")
    return corpus, expected


def test_a_hostile_corpus_indexes_only_the_good_files_and_names_every_skipped_one(tmp_path, fake_embedder):
    corpus, expected = build_hostile_corpus(tmp_path)
    settings = Settings(corpus_dir=corpus, index_path=tmp_path / "index.sqlite3", embedding_model=fake_embedder.name)

    started = time.monotonic()
    huge = load_file_ms = None
    try:
        load_file(corpus / "huge.txt", corpus, settings.max_file_bytes)
    except SkipFile as exc:
        huge = str(exc)
        load_file_ms = (time.monotonic() - started) * 1000
    assert huge == "larger than the 10 MB limit (50 MB)"

    started = time.monotonic()
    report = run_index(settings)
    seconds = time.monotonic() - started
    print(f"hostile corpus: {len(expected)} files in {seconds:.2f}s; 50 MB file refused in {load_file_ms:.2f} ms")
    assert seconds < 60

    skipped = dict(report.skipped)
    indexed = set(report.added)
    # Every file is accounted for, once: indexed, or skipped with its reason on a line of its own.
    assert indexed.isdisjoint(skipped)
    assert indexed | set(skipped) == set(expected), (indexed | set(skipped)) ^ set(expected)
    lines = report.lines()
    for name, reason in skipped.items():
        assert reason and "\n" not in reason
        assert f"skipped {name}: {reason}" in lines
    for name, outcome in expected.items():
        if outcome is None:
            assert name in indexed, (name, skipped.get(name))
        elif outcome != "either":
            assert outcome in skipped.get(name, ""), (name, skipped.get(name))
    for name in indexed:
        print(f"  indexed {name}" + ("  (pathological)" if expected[name] == "either" else ""))
    for name, reason in sorted(skipped.items()):
        print(f"  skipped {name}: {reason}")

    conn = sqlite3.connect(settings.index_path)
    try:
        texts = [t for (t,) in conn.execute("SELECT text FROM passages")]
        keys = {k for (k,) in conn.execute("SELECT key FROM articles")}
        dates = dict(conn.execute("SELECT key, published FROM articles"))
    finally:
        conn.close()
    assert keys == indexed
    # Nothing from outside the corpus folder got in.
    passwd = Path("/etc/passwd").read_text(errors="replace").splitlines() if Path("/etc/passwd").exists() else []
    for text in texts:
        assert SECRET not in text and "root:x:0:0" not in text
        assert not any(len(line) > 10 and line in text for line in passwd)
        assert text.strip() and "\x00" not in text
    assert not any(k.startswith("outside_dir") for k in keys)
    # Duplicates are indexed once; dates are never guessed.
    assert sum(PARAGRAPH in t for t in texts) >= 5
    assert dates["undated.txt"] is None and dates["nonsense_date.md"] is None
    assert dates["utf8_bom.md"] == "2021-08-09"


# ------------------------------------------------------------------------------ property: bytes -> passages

_TOKENS = list("ab .,:;!?-#*_[]()<>{}\"'`\n\r\t\u00a0—“”é\u200b\u202e\x00\x0c") + [
    "By Jane Doe", "Aug. 9, 2021", "---\n", "title: x\n", "\n\n", "> ", "- [x](#)", "<p>", "</p>", "<div>",
    "Mr. Smith", "U.S. ", "The council voted.", " word" * 12, "x" * 80, "{\"text\": \"", "\"}\n",
]  # fmt: skip
_TEXT = st.lists(st.sampled_from(_TOKENS), max_size=80).map("".join)


def _wrap(kind: str, text: str) -> bytes:
    """Texty junk inside a well-formed record or page, so JSON and HTML get past their outer checks."""
    if kind == "json":
        return json.dumps({"title": "T", "text": text, "date": "2021-08-09", "author": text[:20]}).encode()
    if kind == "jsonl":
        return (
            json.dumps({"text": text}) + "\n" + json.dumps({"title": text[:30], "text": text[::-1]}) + "\n"
        ).encode()
    if kind == "html":
        return f"<html><head><title>T</title></head><body><article><p>{PARAGRAPH} {text}</p><p>{text[::-1]} {PARAGRAPH}</p></article></body></html>".encode()
    return text.encode()


_INPUT = st.one_of(
    st.binary(max_size=400),
    _TEXT.map(str.encode),
    st.builds(_wrap, st.sampled_from(["json", "jsonl", "html"]), _TEXT),
)
_FAKE = FakeEmbedder()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(suffix=st.sampled_from(SUPPORTED_SUFFIXES), data=_INPUT, max_tokens=st.sampled_from([4, 16, 64]))
def test_any_bytes_become_clean_passages_or_a_clean_skip(suffix, data, max_tokens):
    """End to end through parse and chunk: passages that are non-empty, trimmed, NUL-free, verbatim
    slices of the article, in order with only whitespace between them; or a one-line skip reason."""
    try:
        docs = parse_file("f" + suffix, data)
    except SkipFile as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    for doc in docs:
        passages = make_passages(doc.paragraphs, count_tokens=_FAKE.count_tokens, max_tokens=max_tokens)
        assert passages
        body = "\n\n".join(p.strip() for p in doc.paragraphs)
        for passage in passages:
            assert isinstance(passage, str) and passage.strip() == passage and passage
            assert "\x00" not in passage
            assert passage in body
        assert_verbatim_slices(passages, doc.paragraphs)  # a run too long for the model is cut at tokens


# ------------------------------------------------------------------------------ hostile questions

HOSTILE_QUESTIONS = [
    "",
    "   ",
    "\t\n",
    "x" * 10_000,
    "Kunduz " * 1_500,
    "?!.,;:…",
    "...",
    '"',
    'the "unbalanced quote',
    "AND",
    "Kunduz AND",
    "a AND NOT b",
    "OR OR OR",
    "NEAR",
    "NEAR(Kabul Kunduz, 2)",
    "*",
    "Kab*",
    ":",
    "title:Kunduz",
    "^Kabul",
    "(((",
    "-Taliban",
    "- Taliban",
    "'; DROP TABLE passages; --",
    "1 OR 1=1",
    "SELECT * FROM articles WHERE 1=1",
    "🙂🔥🇺🇸",
    "👨\u200d👩\u200d👧 Kabul",
    "مرحبا بالعالم",
    "שלום עולם Kunduz",
    "\u202eKunduz\u202c",
    "\u200b\u200c\u200d\ufeff",
    "Kun\u200bduz",
    "Kabul\x00Kunduz",
    "\x1b[31mKabul",
    "caf\udce9 Kunduz",
    "🙂" * 2_000,
]
CLEAR_ERRORS = {  # question -> the one-line error the user gets (everything else gets an answer)
    "": "the question is empty",
    "   ": "the question is empty",
    "\t\n": "the question is empty",
    "x" * 10_000: "the question is too long (10000 characters, at most 2000)",
    "Kunduz " * 1_500: "the question is too long (10499 characters, at most 2000)",
    "caf\udce9 Kunduz": "the question is not valid UTF-8 text",
    # punctuation, symbols and emoji alone would embed close to nothing in particular
    **dict.fromkeys(
        ["?!.,;:…", "...", '"', "*", ":", "(((", "🙂🔥🇺🇸", "\u200b\u200c\u200d\ufeff", "🙂" * 2_000, "-"],
        "the question has no words",
    ),
}


@pytest.fixture(scope="module")
def question_env(tmp_path_factory):
    """The shipped corpus indexed with the fake embedder; env for CliRunner."""
    fake = FakeEmbedder()
    with pytest.MonkeyPatch.context() as mp:
        use_embedder(mp, fake)
        base = tmp_path_factory.mktemp("questions")
        settings = Settings(corpus_dir=SHIPPED_CORPUS, index_path=base / "index.sqlite3", embedding_model=fake.name)
        run_index(settings)
        yield {
            "INDEX_PATH": str(settings.index_path),
            "EMBEDDING_MODEL": fake.name,
            "WEAK_SCORE": "0.2",
            "RERANK_MODEL": "",
        }


def check_answer_or_clear_error(result, question, *, as_json):
    assert "Traceback" not in result.output
    if question in CLEAR_ERRORS:
        assert result.exit_code == 1, result.output
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and CLEAR_ERRORS[question] in lines[0], result.stderr
        return
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    if as_json:
        data = json.loads(result.stdout)
        assert data["query"] == question and isinstance(data["results"], list)
        assert all(r["text"] for r in data["results"])
    else:
        assert result.stdout.startswith("Q: ")


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_every_hostile_question_gets_an_answer_or_one_clear_error(question_env, mode, as_json):
    for question in HOSTILE_QUESTIONS:
        # `--` ends the options, as in a shell: `corpus-bot ask -- -Taliban`.
        args = ["ask", "--mode", mode, *(["--json"] if as_json else []), "--", question]
        result = CliRunner().invoke(cli, args, env=question_env, catch_exceptions=False)
        check_answer_or_clear_error(result, question, as_json=as_json)


def test_hostile_questions_on_standard_input_get_one_line_each(question_env):
    """`ask -`: one JSON document per line, an error document for a bad or blank one, never a stop."""
    lines = [q for q in HOSTILE_QUESTIONS if q.strip() and "\n" not in q and "\udce9" not in q] + ["-", "Kabul"]
    result = CliRunner().invoke(
        cli,
        ["ask", "-", "--json", "--mode", "hybrid"],
        env=question_env,
        input="\n".join(lines + [""]) + "\n",
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(docs) == len(lines) + 1 and docs[-1] == {"query": "", "error": "the question is empty"}
    for question, doc in zip(lines, docs):
        assert doc["query"] == question.strip()
        assert ("error" in doc) == (question in CLEAR_ERRORS or len(question) > 2000), doc


def test_a_question_starting_with_a_dash_without_the_separator_is_a_usage_error_not_a_crash(question_env):
    result = CliRunner().invoke(cli, ["ask", "-Taliban"], env=question_env, catch_exceptions=False)
    assert result.exit_code == 2 and "No such option" in result.stderr and "Traceback" not in result.output


@pytest.mark.model
def test_hostile_questions_through_the_real_model(shipped_index, real_embedder, monkeypatch):
    """The real tokenizer is where odd text breaks (it raised TypeError on undecodable bytes)."""
    use_embedder(monkeypatch, real_embedder)  # the index's ONNX export answers; this covers a fallback
    env = {
        "INDEX_PATH": str(shipped_index.index_path),
        "EMBEDDING_MODEL": shipped_index.embedding_model,
        "RERANK_MODEL": "",
    }
    started = time.monotonic()
    for mode in ["vector", "keyword", "hybrid"]:
        for question in HOSTILE_QUESTIONS:
            result = CliRunner().invoke(
                cli, ["ask", "--mode", mode, "--json", "--", question], env=env, catch_exceptions=False
            )
            check_answer_or_clear_error(result, question, as_json=True)
    print(f"{3 * len(HOSTILE_QUESTIONS)} hostile questions with the real model in {time.monotonic() - started:.1f}s")
