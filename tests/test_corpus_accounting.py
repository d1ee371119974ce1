"""Every file in the corpus folder is accounted for by an index run: indexed, skipped with a reason,
ignored as not an article format, or counted as hidden; a sidecar with no article is said."""

import json
import os

from click.testing import CliRunner

from bot.cli import cli
from embeddings.parse import LeftOut, iter_corpus_files

ARTICLE = "A title\n\nThe council met on Monday in Kunduz to discuss the roads.\n"


def make(root, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_walk_lists_what_it_passes_over(tmp_path):
    make(
        tmp_path,
        {
            "a.txt": ARTICLE,
            "a.meta.json": "{}",
            "UPPER.TXT": ARTICLE,
            "UPPER.meta.yaml": "title: x",
            "notes.docx": "x",
            "notes.text": "x",
            "sub/photo.jpg": "x",
            "sub/gone.meta.json": "{}",
            "sub/b.md.meta.json": "{}",
            "sub/b.md": ARTICLE,
            ".DS_Store": "x",
            ".git/config": "x",
            "sub/.cache/c.txt": ARTICLE,
        },
    )
    left_out = LeftOut()
    found = [p.relative_to(tmp_path).as_posix() for p in iter_corpus_files(tmp_path, left_out=left_out)]
    assert found == ["UPPER.TXT", "a.txt", "sub/b.md"]
    assert left_out.not_articles == ["notes.docx", "notes.text", "sub/photo.jpg"]
    # b.md's sidecar is b.meta.json: b.md.meta.json would be read for an article b.md.txt
    assert left_out.orphan_sidecars == ["sub/b.md.meta.json", "sub/gone.meta.json"]
    assert left_out.hidden == 3  # .DS_Store, .git/, sub/.cache/: each counted once, not looked into
    assert left_out.linked_folders == []
    (tmp_path / "elsewhere").symlink_to(tmp_path / "sub", target_is_directory=True)
    left_out = LeftOut()
    iter_corpus_files(tmp_path, left_out=left_out)
    assert left_out.linked_folders == ["elsewhere"]


def index(tmp_path, *args):
    env = {
        "CORPUS_DIR": str(tmp_path / "corpus"),
        "INDEX_PATH": str(tmp_path / "index.sqlite3"),
        "EMBEDDING_MODEL": "fake-hash-embedder",
    }
    return CliRunner().invoke(cli, ["index", *args], env=env, catch_exceptions=False)


def test_the_index_report_accounts_for_every_file(tmp_path, fake_embedder):
    corpus = tmp_path / "corpus"
    make(
        corpus,
        {
            "a.txt": ARTICLE,
            "a.meta.json": '{"title": "Roads"}',
            "b.txt": ARTICLE.replace("roads", "bridges"),
            "empty.txt": "",
            "orphan.meta.json": "{}",
            "report.docx": "x",
            "notes.text": "x",
            "img/map.png": "x",
            ".hidden.txt": ARTICLE,
            ".obsidian/app.json": "{}",
        },
    )
    text = index(tmp_path)
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert (
        "ignored report.docx: not an article format" in lines and "ignored img/map.png: not an article format" in lines
    )
    assert "ignored notes.text: not an article format" in lines
    assert any(
        line.startswith("skipped orphan.meta.json: metadata sidecar with no article beside it") for line in lines
    )
    assert "ignored 2 hidden files and folders (name starting with '.')" in lines
    assert not any(".hidden.txt" in line or ".obsidian" in line for line in lines)  # counted, not listed
    (corpus / "linked").symlink_to(corpus / "img", target_is_directory=True)

    report = json.loads(index(tmp_path, "--json").output)
    assert report["ignored"] == ["img/map.png", "notes.text", "report.docx"] and report["hidden"] == 2
    assert {
        "path": "linked/",
        "reason": "a symlink to a folder, not followed (only files inside the corpus folder, "
        "or symlinks to such files, are read)",
    } in report["skipped"]
    accounted = set(report["unchanged"]) | {s["path"] for s in report["skipped"]} | set(report["ignored"])
    used_sidecars = {"a.meta.json"}
    on_disk = {
        p.relative_to(corpus).as_posix()
        for p in corpus.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(corpus).parts)
    } | {"linked/"}
    assert on_disk == accounted | used_sidecars


def test_a_sidecar_whose_article_is_removed_is_reported(tmp_path, fake_embedder):
    corpus = tmp_path / "corpus"
    make(corpus, {"a.txt": ARTICLE, "a.meta.json": '{"title": "Roads"}', "b.txt": ARTICLE.replace("roads", "wells")})
    first = json.loads(index(tmp_path, "--json").output)
    assert first["skipped"] == [] and first["ignored"] == [] and first["hidden"] == 0
    os.remove(corpus / "a.txt")
    second = json.loads(index(tmp_path, "--json").output)
    assert second["removed"] == ["a.txt"]
    assert [s["path"] for s in second["skipped"]] == ["a.meta.json"]
