"""YAML and JSON metadata built to exhaust the indexer: nested aliases ("billion laughs"), deep
nesting, huge numbers, explicit tags. Each costs milliseconds and skips its file with one line;
the good files beside it are indexed. Figures: docs/reliability.md."""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest

from embeddings.config import Settings
from embeddings.index import run_index
from embeddings.parse import SkipFile, parse_file

BODY = "The council said on Tuesday that the new bridge would open to traffic next month, after long delays.\n"


def alias_bomb(field: str) -> str:
    """Nine levels of nine aliases: 9**9 (387 million) copies of `x` behind one field, in ~450 bytes."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + f"\n{field}: *i\n"


def front_matter(yaml_text: str) -> bytes:
    return f"---\n{yaml_text}---\n\n{BODY}".encode()


BOMBS = {  # name -> (file bytes, sidecar bytes, the skip reason expected)
    "title_bomb.md": (front_matter(alias_bomb("title")), b"", "YAML alias *a on line 3: aliases are not allowed"),
    "author_bomb.md": (front_matter(alias_bomb("author")), b"", "YAML alias *a on line 3"),
    "date_bomb.md": (front_matter(alias_bomb("date")), b"", "YAML alias *a on line 3"),
    "sidecar_bomb.txt": (
        f"A title\n\n{BODY}".encode(),
        alias_bomb("title").encode(),
        "invalid sidecar: YAML alias *a on line 2",
    ),
    "merge_key.md": (front_matter("base: &b {title: x}\n<<: *b\n"), b"", "YAML alias *b"),
    "deep_flow.md": (front_matter("title: " + "[" * 100_000 + "]" * 100_000 + "\n"), b"", "nesting depth"),
    "deep_block.md": (front_matter("".join("  " * i + "k:\n" for i in range(400))), b"", "nested more than 20 levels"),
    "many_values.md": (front_matter("author: [" + "x, " * 300_000 + "]\n"), b"", "more than 10,000 YAML values"),
    "big_front_matter.md": (front_matter("title: " + "x" * 2_000_000 + "\n"), b"", "larger than 1 MB"),
    "python_tag.md": (
        front_matter("title: !!python/object/apply:os.system ['true']\n"),
        b"",
        "YAML tag !!python/object",
    ),
    "base60.md": (front_matter("title: !!int " + ":".join(["59"] * 100_000) + "\n"), b"", "YAML tag !!int"),
    "json_deep_sidecar.txt": (
        f"A title\n\n{BODY}".encode(),
        b'{"title": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "invalid sidecar: bad JSON: nested too deeply",
    ),
    "json_big_int.json": (
        b'{"text": "' + BODY.strip().encode() + b'", "date": ' + b"9" * 100_000 + b"}",
        b"",
        "invalid JSON: a number of more than 4300 digits",
    ),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_metadata_bomb_is_skipped_with_one_line_in_milliseconds_and_little_memory(name):
    data, sidecar, reason = BOMBS[name]
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(SkipFile) as skipped:
            parse_file(name, data, sidecar)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    extra = peak - 4 * (len(data) + len(sidecar))  # the file itself, decoded and split, is not the bomb's cost
    print(
        f"{name}: {len(data) + len(sidecar):,} bytes skipped in {seconds * 1000:.1f} ms, peak {peak / 1e6:.1f} MB "
        f"({skipped.value})"
    )
    assert reason in str(skipped.value) and "\n" not in str(skipped.value)
    assert seconds < 1.0  # the alias bomb took 37 s before
    assert extra < 50e6  # and 3 GB


def test_plain_scalars_are_text_and_the_bounds_leave_real_metadata_alone():
    """Numbers, booleans and dates in front matter are read as the text they are (no YAML number
    rules); anchors without aliases, quoted text and lists of names still work."""
    yaml_text = (
        "title: 1984\nsource: &src yes\nauthor: [Jane Doe, 'John Roe']\ndate: 2021-08-09\n"
        "url: https://example.org/a\ndescription: !!str 42\nextra: {nested: {deeper: [1, 2, 3]}}\n"
    )
    [doc] = parse_file("ok.md", front_matter(yaml_text))
    assert (doc.title, doc.source, doc.authors, doc.url, doc.description) == (
        "1984",
        "yes",
        ("Jane Doe", "John Roe"),
        "https://example.org/a",
        "42",
    )
    assert doc.published.isoformat() == "2021-08-09" and doc.warnings == ()


def test_lone_surrogate_escapes_in_json_never_reach_the_index():
    """JSON may escape a lone surrogate (\\ud800); SQLite cannot store it, and one such value
    failed the whole run's commit. A title like that is ignored with a warning; a text, skipped."""
    record = {"title": "bad \ud800 title", "author": ["Jane \udfff Doe"], "text": BODY}
    [doc] = parse_file("a.json", json.dumps(record).encode())
    assert doc.title is None and doc.authors == ()
    assert any("title" in w and "not text" in w for w in doc.warnings)
    with pytest.raises(SkipFile, match="record 1 text is not valid Unicode"):
        parse_file("b.json", json.dumps({"text": BODY + "\ud800"}).encode())


def test_metadata_bombs_beside_good_files_skip_one_line_each_and_the_rest_is_indexed(tmp_path, fake_embedder):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n in range(3):
        (corpus / f"good{n}.txt").write_text(f"Good article {n}\n\nThe good article number {n} says: {BODY}")
    for name, (data, sidecar, _) in BOMBS.items():
        (corpus / name).write_bytes(data)
        if sidecar:
            (corpus / name).with_suffix(".meta.json" if sidecar.startswith(b"{") else ".meta.yaml").write_bytes(sidecar)
    settings = Settings(corpus_dir=corpus, index_path=tmp_path / "index.sqlite3", embedding_model=fake_embedder.name)

    started = time.perf_counter()
    report = run_index(settings)
    print(f"{len(BOMBS)} bombs and 3 good files indexed in {time.perf_counter() - started:.2f} s")

    assert sorted(report.added) == ["good0.txt", "good1.txt", "good2.txt"]
    assert sorted(path for path, _ in report.skipped) == sorted(BOMBS)
    lines = report.lines()
    for path, reason in report.skipped:
        assert f"skipped {path}: {reason}" in lines and BOMBS[path][2] in reason
