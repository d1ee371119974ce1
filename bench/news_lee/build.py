"""Build the news_lee evaluation set (BEIR layout) from the Lee background corpus in gensim's wheel.

    python bench/news_lee/build.py OUT_DIR [--questions FILE] [--wheel PATH] [--dump-paragraphs FILE]

The news text is not in this repository (copyright): it is read from
`gensim/test/test_data/lee_background.cor` inside the gensim 4.4.0 wheel (or sdist), which is fetched
with `pip download` unless --wheel names a local copy. Each line of that file is one story. A story
is cut into paragraphs of 3 sentences (a final single sentence joins the paragraph before it), and
each paragraph is one document `lee-SSS-P` (story number from 0, paragraph number from 0). Queries
and qrels come from a question file: the committed `questions.tsv` beside this script by default, or
`--questions questions_paraphrase.tsv` for the harder paraphrase set. The corpus is the same for both;
the eval tool names a data set after its folder, so build each set into its own OUT_DIR
(e.g. bench/out/news_lee and bench/out/news_lee_paraphrase).

Writes OUT_DIR/corpus.jsonl, OUT_DIR/queries.jsonl and OUT_DIR/qrels/test.tsv.
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repo root, for embeddings.chunk

from embeddings.chunk import sentence_spans  # noqa: E402

GENSIM_VERSION = "4.4.0"
MEMBER = "gensim/test/test_data/lee_background.cor"
# sha256 of lee_background.cor in gensim 4.4.0; a different file would silently change every id.
EXPECTED_SHA256 = "5d78d6dafd953bbf65797bef09a9ffb9ec430583381be705f8fd460000f370fb"
EXPECTED_STORIES = 300
SENTENCES_PER_PARAGRAPH = 3
QUESTIONS = HERE / "questions.tsv"  # default; --questions picks another file (e.g. questions_paraphrase.tsv)


def fail(message: str) -> None:
    print(f"build.py: error: {message}", file=sys.stderr)
    sys.exit(1)


def download(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    found = _find_archive(cache)
    if found:
        return found
    command = [sys.executable, "-m", "pip", "download", f"gensim=={GENSIM_VERSION}", "--no-deps", "-d", str(cache)]
    print("running:", " ".join(command), file=sys.stderr)
    result = subprocess.run(command, stdout=sys.stderr)
    if result.returncode != 0:
        fail(f"pip download failed (exit {result.returncode}); pass a local copy with --wheel PATH")
    found = _find_archive(cache)
    if not found:
        fail(f"pip download left no gensim-{GENSIM_VERSION} wheel or sdist in {cache}")
    return found


def _find_archive(folder: Path) -> Path | None:
    hits = sorted(glob.glob(str(folder / f"gensim-{GENSIM_VERSION}*.whl")))
    hits += sorted(glob.glob(str(folder / f"gensim-{GENSIM_VERSION}.tar.gz")))
    return Path(hits[0]) if hits else None


def read_corpus_bytes(archive: Path) -> bytes:
    if not archive.is_file():
        fail(f"{archive} does not exist")
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            try:
                return z.read(MEMBER)
            except KeyError:
                fail(f"{archive} has no {MEMBER}")
    if tarfile.is_tarfile(archive):  # the sdist, if pip had no wheel for this platform
        with tarfile.open(archive) as t:
            for m in t.getmembers():
                if m.name.endswith("/" + MEMBER) and m.isfile():
                    return t.extractfile(m).read()
        fail(f"{archive} has no {MEMBER}")
    fail(f"{archive} is neither a wheel (zip) nor an sdist (tar)")
    raise AssertionError


def decode(raw: bytes) -> str:
    # The 4.4.0 file is plain ASCII; utf-8 with a latin-1 fallback keeps any other copy readable.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        print("warning: corpus is not valid utf-8, decoding as latin-1", file=sys.stderr)
        return raw.decode("latin-1")


def stories(text: str) -> list[str]:
    lines = [" ".join(line.split()) for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def paragraphs(story: str) -> list[str]:
    """Consecutive groups of 3 sentences; a lone last sentence joins the group before it."""
    sentences = [story[a:b] for a, b in sentence_spans(story)]
    groups = [sentences[i : i + SENTENCES_PER_PARAGRAPH] for i in range(0, len(sentences), SENTENCES_PER_PARAGRAPH)]
    if len(groups) > 1 and len(groups[-1]) == 1:
        last = groups.pop()
        groups[-1] += last
    return [" ".join(g) for g in groups]


def build_docs(story_list: list[str]) -> dict[str, str]:
    docs: dict[str, str] = {}
    for s, story in enumerate(story_list):
        for p, text in enumerate(paragraphs(story)):
            docs[f"lee-{s:03d}-{p}"] = text
    return docs


def read_questions(path: Path, docs: dict[str, str]) -> list[tuple[str, str, str]]:
    if not path.is_file():
        fail(f"{path} is missing")
    rows: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    problems: list[str] = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header != ["query-id", "corpus-id", "question"]:
            fail(f"{path} line 1: header must be 'query-id<TAB>corpus-id<TAB>question', got {header!r}")
        for number, parts in enumerate(reader, 2):
            if not parts or not "".join(parts).strip():
                continue
            if len(parts) != 3:
                problems.append(f"line {number}: expected 3 tab-separated fields, got {len(parts)}")
                continue
            qid, cid, question = (x.strip() for x in parts)
            if not qid or not question:
                problems.append(f"line {number}: empty query-id or question")
            if qid in seen:
                problems.append(f"line {number}: duplicate query-id {qid!r}")
            if cid not in docs:
                problems.append(f"line {number}: corpus-id {cid!r} is not a paragraph of the built corpus")
            seen.add(qid)
            rows.append((qid, cid, question))
    if problems:
        fail(f"{path}:\n  " + "\n  ".join(problems))
    if not rows:
        fail(f"{path} has no questions")
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument(
        "--questions",
        type=Path,
        default=QUESTIONS,
        metavar="FILE",
        help=f"question file, 'query-id<TAB>corpus-id<TAB>question' (default: {QUESTIONS.relative_to(HERE.parents[1])})",
    )
    parser.add_argument("--wheel", type=Path, help="local gensim 4.4.0 wheel (or sdist); default: pip download it")
    parser.add_argument("--cache", type=Path, help="where pip download puts the wheel (default: a temporary folder)")
    parser.add_argument("--dump-paragraphs", type=Path, metavar="FILE", help="also write 'id<TAB>text' per paragraph")
    args = parser.parse_args()

    if args.wheel:
        raw = read_corpus_bytes(args.wheel)
    elif args.cache:
        raw = read_corpus_bytes(download(args.cache))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            raw = read_corpus_bytes(download(Path(tmp)))
    digest = hashlib.sha256(raw).hexdigest()
    if digest != EXPECTED_SHA256:
        fail(f"{MEMBER} has sha256 {digest}, expected {EXPECTED_SHA256} (gensim {GENSIM_VERSION}); ids would not match")
    story_list = stories(decode(raw))
    if len(story_list) != EXPECTED_STORIES:
        fail(f"expected {EXPECTED_STORIES} stories, found {len(story_list)}")
    docs = build_docs(story_list)
    questions = read_questions(args.questions, docs)

    out = args.out_dir
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "corpus.jsonl", [{"_id": k, "title": "", "text": v} for k, v in docs.items()])
    write_jsonl(out / "queries.jsonl", [{"_id": q, "text": text} for q, _, text in questions])
    with (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for q, c, _ in questions:
            handle.write(f"{q}\t{c}\t1\n")
    if args.dump_paragraphs:
        with args.dump_paragraphs.open("w", encoding="utf-8") as handle:
            for k, v in docs.items():
                handle.write(f"{k}\t{v}\n")

    covered = {c.rsplit("-", 1)[0] for _, c, _ in questions}
    print(
        f"wrote {out}: {len(docs)} paragraphs from {len(story_list)} stories, "
        f"{len(questions)} questions from {args.questions.name} over {len(covered)} stories",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
