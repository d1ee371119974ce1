"""Turn article files (.txt, .md, .html, .json, .jsonl) into clean articles with metadata.

The corpus is scraped news: titles, bylines and dates sit in loose "header" blocks, and the text is
interleaved with page furniture (related-link lists, newsletter prompts, photo captions, ...). This
module separates the article body from that furniture with small, explicit rules, and never rewrites
the text it keeps: every paragraph of a plain-text article is a verbatim slice of the file.

Metadata precedence, per field: sidecar file > front matter / JSON record / HTML metadata > a guess
from the text. Anything unparseable raises SkipFile with a one-line reason, never another exception.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import re
import reprlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from frontmatter.default_handlers import YAMLHandler

from .dates import DateLine, coerce_date, parse_date_line

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SUPPORTED_SUFFIXES",
    "ArticleDoc",
    "SkipFile",
    "iter_corpus_files",
    "load_file",
    "parse_file",
    "sidecar_bytes",
]

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".json", ".jsonl")
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
SIDECAR_SUFFIXES = (".meta.json", ".meta.yaml", ".meta.yml")
_MAX_SIDECAR_BYTES = 1024 * 1024


class SkipFile(Exception):
    """A file that cannot be indexed; str(exc) is the one-line human reason, e.g.
    'not UTF-8 text (invalid byte 0xe9 at offset 120)', 'binary file', 'empty file',
    'larger than the 10 MB limit (52.4 MB)', 'symlink pointing outside the corpus folder',
    'invalid JSON on line 3: ...', 'no article text after removing page furniture'."""


@dataclass(frozen=True)
class ArticleDoc:
    key: str  # corpus-relative POSIX path; for .json/.jsonl records "file.jsonl#N" (N = 1-based record number)
    title: str | None
    source: str | None  # the publication, only when stated or given; never guessed from a mention in the text
    authors: tuple[str, ...]
    published: dt.date | None
    updated: dt.date | None
    url: str | None
    description: str | None  # dek / subtitle when recognised (kept so no text is lost, not quoted as a passage)
    paragraphs: tuple[str, ...]  # the article body, verbatim, furniture removed; no empty strings, no NUL
    warnings: tuple[str, ...] = ()  # non-fatal notes for the index report


# --------------------------------------------------------------------------------------------------
# Finding and reading files
# --------------------------------------------------------------------------------------------------


def _is_sidecar_name(name: str) -> bool:
    return name.lower().endswith(SIDECAR_SUFFIXES)


def iter_corpus_files(root: Path, unreadable: list[OSError] | None = None) -> list[Path]:
    """Sorted candidate files under root (recursive) with a supported suffix, excluding hidden files/dirs and
    sidecar files. Symlinks to files are returned too (load_file decides about them); symlinked
    directories are not descended into. A folder that cannot be listed is appended to
    `unreadable` (the error, with its path) rather than passed over in silence."""
    root = Path(root)
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable.append if unreadable is not None else None):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or _is_sidecar_name(name):
                continue
            if name.lower().endswith(SUPPORTED_SUFFIXES):
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _format_megabytes(size: int) -> str:
    text = f"{size / (1024 * 1024):.1f}"
    text = text.removesuffix(".0")
    return f"{text} MB" if text != "0" else f"{size} bytes"


def _resolve_inside(path: Path, root: Path) -> Path:
    """The resolved path, or SkipFile when it cannot be resolved or leads outside root."""
    try:
        resolved = path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports symlink loops this way
        raise SkipFile("symlink loop (the link points back to itself)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SkipFile("symlink loop (the link points back to itself)") from None
        if path.is_symlink():
            raise SkipFile(f"dangling symlink (target {os.readlink(path)!s} does not exist)") from None
        raise SkipFile(f"cannot open file: {exc.strerror or exc}") from None
    # A resolved path that starts with root as given is inside it (root's parts are then real
    # directories): the indexer passes its resolved root once, sparing a resolve per file.
    if not (resolved.is_relative_to(root) or resolved.is_relative_to(Path(root).resolve())):
        if path.is_symlink():
            raise SkipFile("symlink pointing outside the corpus folder")
        raise SkipFile("path resolves outside the corpus folder")
    return resolved


def load_file(path: Path, root: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read the raw bytes, refusing with SkipFile: a path whose resolved target is outside root (also
    symlink loops / dangling links), not a regular file, over max_bytes (checked before reading), empty."""
    path = Path(path)
    resolved = _resolve_inside(path, root)
    try:
        if not resolved.is_file():
            raise SkipFile("not a regular file")
        size = resolved.stat().st_size
        if size > max_bytes:
            raise SkipFile(f"larger than the {_format_megabytes(max_bytes)} limit ({_format_megabytes(size)})")
        if size == 0:
            raise SkipFile("empty file")
        with resolved.open("rb") as handle:
            data = handle.read(max_bytes + 1)  # the file may have grown since stat()
    except OSError as exc:
        raise SkipFile(f"cannot read file: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise SkipFile(f"larger than the {_format_megabytes(max_bytes)} limit")
    if not data:
        raise SkipFile("empty file")
    return data


def sidecar_bytes(path: Path, siblings: set[str] | None = None) -> bytes:
    """Raw bytes of the sidecar metadata file for an article file, b'' if none. The sidecar of
    `dir/name.ext` is `dir/name.meta.json`, `dir/name.meta.yaml` or `dir/name.meta.yml` (first that
    exists). Raises SkipFile when a sidecar exists but cannot be read or is over 1 MB. `siblings`,
    the names in the file's folder, spares a stat per candidate when scanning many files."""
    path = Path(path)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    for suffix in SIDECAR_SUFFIXES:
        if siblings is not None and stem + suffix not in siblings:
            continue
        candidate = path.with_name(stem + suffix)
        if not candidate.is_file():
            continue
        try:
            if candidate.stat().st_size > _MAX_SIDECAR_BYTES:
                raise SkipFile(f"sidecar {candidate.name} is larger than 1 MB")
            return candidate.read_bytes()
        except OSError as exc:
            raise SkipFile(f"cannot read sidecar {candidate.name}: {exc.strerror or exc}") from None
    return b""


# --------------------------------------------------------------------------------------------------
# Bytes -> text
# --------------------------------------------------------------------------------------------------

_MAGIC_NUMBERS = {
    b"\x89PNG\r\n\x1a\n": "PNG image",
    b"\xff\xd8\xff": "JPEG image",
    b"GIF87a": "GIF image",
    b"GIF89a": "GIF image",
    b"%PDF-": "PDF document",
    b"PK\x03\x04": "ZIP archive or Office document",
    b"\x1f\x8b": "gzip archive",
    b"7z\xbc\xaf\x27\x1c": "7-Zip archive",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1": "old Microsoft Office document",
    b"\x7fELF": "executable",
    b"OggS": "Ogg media",
    b"ID3": "MP3 audio",
    b"fLaC": "FLAC audio",
    b"RIFF": "RIFF media (WAV/AVI/WebP)",
    b"wOFF": "web font",
    b"SQLite format 3\x00": "SQLite database",
}
_CONTROL_CHARS = re.compile(r"[\x01-\x08\x0e-\x1a\x1c-\x1f\x7f]")


def _binary_kind(data: bytes) -> str | None:
    for magic, kind in _MAGIC_NUMBERS.items():
        if data.startswith(magic):
            return kind
    if data[4:8] == b"ftyp":
        return "MP4/MOV media"
    if b"\x00" in data:
        return "contains NUL bytes"
    return None


def _decode_with_bom(data: bytes) -> str | None:
    """Text for data that starts with a UTF-16/32 byte-order mark, else None."""
    for bom, codec in (
        (b"\xff\xfe\x00\x00", "utf-32"),
        (b"\x00\x00\xfe\xff", "utf-32"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError as exc:
                raise SkipFile(f"not valid {codec.upper()} text ({exc.reason} at offset {exc.start})") from None
    return None


def _decode(data: bytes) -> str:
    """Decode file bytes to text, or SkipFile saying why they are not text."""
    if not data:
        raise SkipFile("empty file")
    text = _decode_with_bom(data)
    if text is None:
        kind = _binary_kind(data)
        if kind:
            raise SkipFile(f"binary file ({kind})")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            bad = exc.object[exc.start]
            raise SkipFile(f"not UTF-8 text (invalid byte 0x{bad:02x} at offset {exc.start})") from None
    if "\x00" in text:
        raise SkipFile("binary file (contains NUL characters)")
    if len(_CONTROL_CHARS.findall(text)) > max(8, len(text) // 10):
        raise SkipFile("binary file (mostly control characters)")
    if not text.strip():
        raise SkipFile("whitespace-only text")
    return text


def _normalise(text: str) -> str:
    """Unix line endings, no trailing whitespace (NBSP included) on any line; inner text untouched."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n"))


def _split_blocks(text: str) -> list[str]:
    """Blocks of consecutive non-blank lines (the paragraphs as written)."""
    return [block.strip() for block in re.split(r"\n\s*\n", _normalise(text)) if block.strip()]


# --------------------------------------------------------------------------------------------------
# Metadata given explicitly (sidecar, front matter, JSON record, HTML)
# --------------------------------------------------------------------------------------------------

_FIELD_ALIASES = {
    "title": "title",
    "source": "source",
    "publication": "source",
    "site_name": "source",
    "sitename": "source",
    "author": "authors",
    "authors": "authors",
    "date": "published",
    "published": "published",
    "updated": "updated",
    "url": "url",
    "description": "description",
    "subtitle": "description",
}
_TEXT_FIELDS = ("title", "source", "url", "description")


@dataclass
class _Fields:
    """Metadata fields stated by one origin, plus what was wrong with the rest."""

    values: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    bad_dates: dict[str, str] = field(default_factory=dict)  # field -> "front matter date 'soon' is not a date"


_SHOW = reprlib.Repr()  # keyword arguments only from Python 3.12
_SHOW.maxlevel, _SHOW.maxlist, _SHOW.maxdict, _SHOW.maxstring, _SHOW.maxother = 2, 4, 4, 60, 60


def _show(value: object) -> str:
    """A short repr for a warning: reprlib stops early, so a value of millions of items (or one
    shared by reference many times over) costs no more than a small one."""
    text = _SHOW.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_text(value: object) -> bool:
    """A str that SQLite can store: JSON and YAML escapes can make lone surrogates (\\ud800), which
    would fail the whole index run's commit."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _split_names(text: str) -> list[str]:
    parts = re.split(r"\s*[,;&]\s*(?:and\s+)?|\s+and\s+", text.strip())
    return [part.strip() for part in parts if part.strip()]


def _read_authors(raw: object) -> list[str] | None:
    if _is_text(raw):
        return _split_names(raw)
    if isinstance(raw, (list, tuple)) and all(_is_text(item) for item in raw):
        return [item.strip() for item in raw if item.strip()]
    return None


def _read_fields(mapping: dict[Any, Any], origin: str) -> _Fields:
    """The recognised fields of a metadata mapping; unknown keys are ignored, bad values noted."""
    fields = _Fields()
    for key, raw in mapping.items():
        name = _FIELD_ALIASES.get(str(key).strip().lower())
        if name is None or raw is None or name in fields.values:
            continue
        if name in _TEXT_FIELDS:
            if _is_text(raw) and raw.strip():
                fields.values[name] = raw.strip()
            elif not _is_text(raw):
                fields.warnings.append(f"{origin} {key} {_show(raw)} is not text; ignored")
        elif name == "authors":
            authors = _read_authors(raw)
            if authors is None:
                fields.warnings.append(f"{origin} {key} {_show(raw)} is not a name or list of names; ignored")
            elif authors:
                fields.values[name] = tuple(authors)
        else:
            date = coerce_date(raw)
            if date is None:
                fields.bad_dates.setdefault(name, f"{origin} {key} {_show(raw)} is not a date")
            else:
                fields.values[name] = date
    return fields


class _MetadataLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML for article metadata: libyaml's parser when PyYAML has it (the pure-Python one took
    a minute on a 1 MB front matter), and every plain scalar is text or null. Dates stay strings
    so every date goes through embeddings.dates (PyYAML would raise on 2021-02-30 and silently
    accept forms we don't); `title: 2021` is a title, not a number; and no value is built by
    YAML's int/float rules, whose base-60 forms cost quadratic time on a long value."""


_MetadataLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag == "tag:yaml.org,2002:null"]
    for first, resolvers in _MetadataLoader.yaml_implicit_resolvers.items()
}
_YAML_TAGS = {None, "!"} | {f"tag:yaml.org,2002:{name}" for name in ("str", "seq", "map", "null")}
# Metadata is a mapping of text and lists of names: anything deeper or larger is not metadata,
# and the bounds keep the worst front matter to a fraction of a second (docs/reliability.md).
_MAX_YAML_DEPTH = 20
_MAX_YAML_VALUES = 10_000


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _yaml_refusal(text: str) -> str | None:
    """Why text is not YAML we build objects from, or None. Checked on the event stream, before
    anything is built: an alias (`*a`) repeats a whole subtree, so nine nested aliases in a few
    hundred bytes stand for billions of values (the "billion laughs"); explicit tags other than
    text, lists, mappings and null would bring back the number rules; nesting and size are bounded."""
    depth = values = 0
    for event in yaml.parse(text, Loader=_MetadataLoader):
        line = f" on line {event.start_mark.line + 1}" if event.start_mark else ""
        if isinstance(event, yaml.AliasEvent):
            return f"YAML alias *{event.anchor[:40]}{line}: aliases are not allowed in metadata"
        if not isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent, yaml.CollectionEndEvent)):
            continue  # stream and document boundaries
        if not isinstance(event, yaml.CollectionEndEvent):
            if event.tag not in _YAML_TAGS:
                tag = event.tag.replace("tag:yaml.org,2002:", "!!")[:40]
                return f"YAML tag {tag}{line}: metadata values are text, lists or mappings"
            values += 1
            if values > _MAX_YAML_VALUES:
                return f"more than {_MAX_YAML_VALUES:,} YAML values{line}"
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > _MAX_YAML_DEPTH:
                return f"YAML nested more than {_MAX_YAML_DEPTH} levels deep{line}"
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return None


def _load_yaml_mapping(text: str, what: str) -> dict[Any, Any]:
    if len(text) > _MAX_SIDECAR_BYTES:  # characters: at least as many bytes
        raise SkipFile(f"invalid {what}: larger than 1 MB (metadata is a few lines)")
    try:
        refusal = _yaml_refusal(text)
        if refusal:
            raise SkipFile(f"invalid {what}: {refusal}")
        data = yaml.load(text, Loader=_MetadataLoader)  # noqa: S506 - a SafeLoader, checked above
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" on line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or _one_line(exc)
        raise SkipFile(f"invalid {what}: bad YAML{where} ({_one_line(problem)})") from None
    except SkipFile:
        raise
    except Exception as exc:  # RecursionError, ValueError from explicit tags, ...
        raise SkipFile(f"invalid {what}: bad YAML ({type(exc).__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SkipFile(f"invalid {what}: expected a mapping of fields, found {type(data).__name__}")
    return data


def _json_loads(text: str) -> Any:
    """json.loads with every failure as ValueError carrying a readable message."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"line {exc.lineno}: {exc.msg}") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # Python refuses to read ints over a digit limit
            raise ValueError(f"a number of more than {sys.get_int_max_str_digits()} digits") from None
        raise ValueError(_one_line(exc)) from None


def _json_problem(exc: ValueError) -> str:
    """' on line 3: Expecting value', or ': nested too deeply' when no line is known."""
    return f" on {exc}" if str(exc).startswith("line ") else f": {exc}"


def _sidecar_fields(sidecar: bytes) -> _Fields:
    if not sidecar:
        return _Fields()
    try:
        text = sidecar.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SkipFile(f"invalid sidecar: not UTF-8 text (invalid byte 0x{sidecar[exc.start]:02x})") from None
    if not text.strip():
        return _Fields()
    if text.lstrip().startswith(("{", "[")):
        try:
            data = _json_loads(text)
        except ValueError as exc:
            raise SkipFile(f"invalid sidecar: bad JSON{_json_problem(exc)}") from None
        if not isinstance(data, dict):
            raise SkipFile(f"invalid sidecar: expected a mapping of fields, found {type(data).__name__}")
    else:
        data = _load_yaml_mapping(text, "sidecar")
    return _read_fields(data, "sidecar")


# --------------------------------------------------------------------------------------------------
# Header zone of a plain-text article: title, dek, bylines, date lines
# --------------------------------------------------------------------------------------------------

_HEADER_ZONE = 6  # bylines and date lines are only looked for in the first few blocks
_MAX_TITLE_CHARS = 200
_NAME_PARTICLES = {"de", "da", "del", "der", "di", "du", "van", "von", "la", "le", "al", "el", "bin", "ibn"}
_BY_LINE = re.compile(r"By\s+(?P<names>.+)", re.IGNORECASE)
_AUTHOR_LINE = re.compile(r"(?:Authors?|Written by)\s*:\s*(?P<names>.+)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*$")


def _looks_like_name(text: str) -> bool:
    words = text.split()
    if not 1 <= len(words) <= 6:
        return False
    for word in words:
        if word.lower() in _NAME_PARTICLES:
            continue
        if not word[0].isupper() or not all(c.isalpha() or c in ".'’-" for c in word):
            return False
    return True


def _byline_names(line: str, allow_by: bool = True) -> list[str] | None:
    """The author names of a line that is only a byline ('By A and B', 'Author: X'), else None."""
    match = _AUTHOR_LINE.fullmatch(line) or (_BY_LINE.fullmatch(line) if allow_by else None)
    if match is None:
        return None
    names = _split_names(match.group("names"))
    if names and all(_looks_like_name(name) for name in names):
        return names
    return None


@dataclass
class _Guess:
    """Metadata read from the text itself (lowest precedence)."""

    title: str | None = None
    description: str | None = None
    authors: list[str] = field(default_factory=list)
    source: str | None = None
    published: dt.date | None = None
    updated: dt.date | None = None
    warnings: list[str] = field(default_factory=list)

    def add_authors(self, names: list[str]) -> None:
        self.authors.extend(name for name in names if name not in self.authors)

    def add_date_line(self, line: DateLine, text: str) -> None:
        self.published = self.published or line.published
        self.updated = self.updated or line.updated
        for bad in line.invalid:
            self.warnings.append(f"date {bad!r} in the text is not a real date; ignored")


def _header_lines(block: str) -> list[list[str] | DateLine] | None:
    """Parsed lines when every line of the block is a byline or a date line, else None."""
    parsed: list[list[str] | DateLine] = []
    for line in block.split("\n"):
        item = _byline_names(line.strip()) or parse_date_line(line)
        if item is None:
            return None
        parsed.append(item)
    return parsed


def _take_header_block(block: str, guess: _Guess) -> bool:
    """Record a byline/date block in guess; False (nothing recorded) if the block is not one."""
    parsed = _header_lines(block)
    if parsed is None:
        return False
    for item in parsed:
        if isinstance(item, DateLine):
            guess.add_date_line(item, block)
        else:
            guess.add_authors(item)
    return True


def _ends_sentence(block: str) -> bool:
    return bool(_SENTENCE_END.search(block))


def _looks_like_title(blocks: list[str], i: int) -> bool:
    block = blocks[i]
    return (
        i + 1 < len(blocks)  # a lone block is the article, not its title
        and "\n" not in block
        and len(block) <= _MAX_TITLE_CHARS
        and _header_lines(block) is None
        and not _is_link_list(block)
    )


def _looks_like_dek(blocks: list[str], i: int) -> bool:
    """The block right after the title is a dek (subtitle) when a byline/date follows it, or when it
    is short and not a sentence (a subtitle, or a truncated photo caption)."""
    block = blocks[i]
    if "\n" in block or i + 1 >= len(blocks) or _header_lines(block) is not None or _is_furniture(block):
        return False
    if _header_lines(blocks[i + 1]) is not None:
        return len(block) <= 400
    return len(block) < 200 and not _ends_sentence(block)


def _read_header(blocks: list[str], guess: _Guess, find_title: bool) -> int:
    """Fill guess from the header zone; returns the index of the first body block."""
    i = 0
    while i < min(len(blocks), _HEADER_ZONE) and _take_header_block(blocks[i], guess):
        i += 1  # bylines/dates above the title (unusual, but seen)
    title_known = not find_title
    if find_title and i < len(blocks) and _looks_like_title(blocks, i):
        guess.title = blocks[i]
        title_known = True
        i += 1
    if title_known and i < len(blocks) and _looks_like_dek(blocks, i):
        guess.description = blocks[i]
        i += 1
    while i < min(len(blocks), _HEADER_ZONE) and _take_header_block(blocks[i], guess):
        i += 1
    return i


# "<Name> is Senior Editor for Antiwar.com. He has ..." states the publication.
_BIO_VERBS = r"(?:is|was|has|writes|covers|reports|edits)\b"
_BIO_PUBLICATION = re.compile(
    r"\s+is\s+[^.]{1,80}?\s+(?:for|at)\s+(?P<publication>(?:the\s+)?[A-Z0-9]\S*(?:\s+[A-Z0-9]\S*){0,5}?)\.(?:\s|$)"
)


def _bio_of(block: str, names: list[str]) -> str | None:
    """The author's name when block is a bio of one of names ('Jason Ditz is ...'), else None."""
    for name in names:
        if block.startswith(name) and re.match(r"\s+" + _BIO_VERBS, block[len(name) :]):
            return name
    return None


def _take_author_lines(blocks: list[str], guess: _Guess) -> list[str]:
    """Remove 'Author: X' blocks (anywhere) and the author bio right after one; the bio may state the
    publication ('X is Senior Editor for Antiwar.com.')."""
    kept: list[str] = []
    i = 0
    while i < len(blocks):
        names = _byline_names(blocks[i], allow_by=False) if "\n" not in blocks[i] else None
        if names is None:
            kept.append(blocks[i])
            i += 1
            continue
        guess.add_authors(names)
        i += 1
        if i < len(blocks) and (name := _bio_of(blocks[i], names)):
            match = _BIO_PUBLICATION.match(blocks[i][len(name) :])
            if match and guess.source is None:
                guess.source = match.group("publication")
            i += 1
    return kept


# --------------------------------------------------------------------------------------------------
# Page furniture: blocks that are not article text
# --------------------------------------------------------------------------------------------------

_LINK_ITEM = re.compile(r"(?:[-*+•]|\d+[.)])?\s*\[[^\]]*\]\([^)]*\)[\s.]*")
_IMAGE_ONLY = re.compile(r"(?:!\[[^\]]*\]\([^)]*\)\s*)+")
_BOILERPLATE = {
    "source link", "source", "read more", "read more here", "advertisement", "ad", "sponsored",
    "share this article", "share this", "share", "continue reading", "continue reading the main story",
    "related", "related articles", "related stories", "related coverage", "print", "email", "comments",
    "view comments", "skip to content", "supported by", "back to top", "loading", "click here",
    "listen to this article", "tweet", "copy link", "subscribe", "sign up", "more from",
}  # fmt: skip
_AGENCY = re.compile(
    r"\b(?:Getty Images|Agence France-Presse|AFP|Reuters|Associated Press|AP Photo|AP|EPA(?:-EFE)?|EFE"
    r"|Shutterstock|Xinhua|Anadolu(?: Agency)?|Sipa(?: USA)?|Alamy|NurPhoto|Bloomberg|Pool Photo|Redux"
    r"|SOPA Images|LightRocket)\b"
)
_CREDIT = re.compile(
    r"(?:(?:Photo(?:graph)?s?|Image|Credit|Photo credit)\s*:\s*\S.*"  # "Photo: Jane Doe"
    r"|(?:[A-Z][\w.'’-]*\s+){1,4}for\s+The\s+[A-Z].*"  # "Jim Huylebroek for The New York Times"
    r"|.*\bvia\s+[A-Z].*)"  # "... via Getty Images", "via Reuters"
)
_CAPTION_TAIL = re.compile(r"(?<=[.!?])[\"'”’)]*\s+")
_NEWSLETTER = re.compile(r"\b(?:sign(?:\s|-)?up|subscribe)\b", re.IGNORECASE)
_NEWSLETTER_TARGET = re.compile(r"\b(?:newsletter|e-?mail|inbox)\b", re.IGNORECASE)
_COMMENTING = re.compile(r"\bcomment(?:s|ing)?\b", re.IGNORECASE)
_COMMENT_PROMPT = re.compile(
    r"let us know|leave a comment|join the conversation|share your thoughts|add a comment|post a comment"
    r"|comments are (?:closed|moderated)|view comments|read comments",
    re.IGNORECASE,
)
_EXPLAINER_HEADING = re.compile(r"Understand (?:the|how|what|why|where|who)\b[^.!?]*")
_EXPLAINER_TEASER = re.compile(r"Here['’]s (?:more|what|how)\b[^.!?]*[.!?]$")
_ABBREVIATION = re.compile(r"\b(?:[A-Z]\.){2,}")
_SHORT_BLOCK = 300  # furniture blocks are short; long blocks are article text whatever they mention


def _is_link_list(block: str) -> bool:
    """Every line is a markdown link (optionally a list item): 'related articles' lists."""
    return all(_LINK_ITEM.fullmatch(line.strip()) for line in block.split("\n"))


def _is_boilerplate(block: str) -> bool:
    words = re.sub(r"[\W_]+", " ", block.lower()).strip()
    return words in _BOILERPLATE


def _is_newsletter_prompt(block: str) -> bool:
    return len(block) <= _SHORT_BLOCK and bool(_NEWSLETTER.search(block) and _NEWSLETTER_TARGET.search(block))


def _is_comment_prompt(block: str) -> bool:
    return len(block) <= _SHORT_BLOCK and bool(_COMMENTING.search(block) and _COMMENT_PROMPT.search(block))


def _is_photo_caption(block: str) -> bool:
    """A short block whose last segment, after its last sentence, is a photo credit:
    '... last year. Agence France-Presse — Getty Images'."""
    if len(block) > _SHORT_BLOCK or "\n" in block:
        return False
    credit = _CAPTION_TAIL.split(block)[-1].strip()
    if not credit or len(credit) > 100 or _ends_sentence(credit):
        return False
    return bool(_AGENCY.search(credit) or _CREDIT.fullmatch(credit))


def _is_section_heading(block: str) -> bool:
    """A short line without any sentence punctuation: a section heading or a stray label."""
    if "\n" in block or len(block) > 120 or len(block.split()) > 15:
        return False
    without_abbreviations = _ABBREVIATION.sub("", block)
    return not re.search(r"[.!?…:;,\"“”]", without_abbreviations)


def _has_no_words(block: str) -> bool:
    return not any(char.isalnum() for char in block)  # "* * *", "---", "|"


def _is_furniture(block: str) -> bool:
    """Furniture recognisable from the block alone (context rules live in _remove_furniture)."""
    return (
        _has_no_words(block)
        or _is_link_list(block)
        or bool(_IMAGE_ONLY.fullmatch(block))
        or _is_boilerplate(block)
        or _is_newsletter_prompt(block)
        or _is_comment_prompt(block)
        or _is_photo_caption(block)
    )


def _remove_furniture(blocks: list[str]) -> list[str]:
    """The article text among body blocks. Section headings are dropped too, unless they are all
    there is (a short JSON record without punctuation is still an article)."""
    furniture: set[int] = set()
    headings: set[int] = set()
    i = 0
    while i < len(blocks):
        block = blocks[i]
        if _EXPLAINER_HEADING.fullmatch(block) and i + 1 < len(blocks):
            # NYT explainer box: "Understand the ..." + a teaser ending "Here's more on ..."
            furniture.add(i)
            teaser = blocks[i + 1]
            if len(teaser) <= 800 and _EXPLAINER_TEASER.search(teaser):
                furniture.add(i + 1)
                i += 1
        elif _is_furniture(block):
            furniture.add(i)
            previous = i - 1
            if _is_link_list(block) and previous >= 0 and _is_section_heading(blocks[previous].removesuffix(" >")):
                furniture.add(previous)  # the heading of a link list: "Taliban Offensive in Afghanistan >"
        elif _is_section_heading(block):
            headings.add(i)
        i += 1
    text = [b for n, b in enumerate(blocks) if n not in furniture and n not in headings]
    return text or [b for n, b in enumerate(blocks) if n in headings and n not in furniture]


# --------------------------------------------------------------------------------------------------
# Assembling an ArticleDoc
# --------------------------------------------------------------------------------------------------

_NO_TEXT = "no article text after removing page furniture"


def _article_from_blocks(blocks: list[str], guess: _Guess, find_title: bool) -> list[str]:
    """Read the header zone and author lines into guess; return the body paragraphs."""
    start = _read_header(blocks, guess, find_title)
    body = _take_author_lines(blocks[start:], guess)
    return _remove_furniture(body)


def _build_doc(key: str, guess: _Guess, stated: list[_Fields], paragraphs: list[str]) -> ArticleDoc:
    """Combine text guesses with stated metadata; later entries of `stated` win over earlier ones."""
    values: dict[str, Any] = {
        "title": guess.title,
        "source": guess.source,
        "authors": tuple(guess.authors),
        "published": guess.published,
        "updated": guess.updated,
        "url": None,
        "description": guess.description,
    }
    warnings = list(guess.warnings)
    bad_dates: dict[str, str] = {}
    for fields in stated:
        values.update(fields.values)
        warnings.extend(fields.warnings)
        bad_dates.update({name: note for name, note in fields.bad_dates.items() if name not in fields.values})
    for name, note in bad_dates.items():
        if values[name] is not None:
            warnings.append(f"{note}; using {values[name].isoformat()} instead")
        elif name == "published":
            warnings.append(f"{note}; article kept undated")
        else:
            warnings.append(f"{note}; ignored")
    if not paragraphs:
        raise SkipFile(_NO_TEXT)
    return ArticleDoc(key=key, paragraphs=tuple(paragraphs), warnings=tuple(warnings), **values)


# --------------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------------


def _parse_plain_text(key: str, text: str, sidecar: _Fields) -> list[ArticleDoc]:
    guess = _Guess()
    paragraphs = _article_from_blocks(_split_blocks(text), guess, find_title=True)
    return [_build_doc(key, guess, [sidecar], paragraphs)]


_ATX_HEADING = re.compile(r" {0,3}(?P<marks>#{1,6})(?:\s+(?P<text>.*?))?(?:\s+#+)?\s*")
_SETEXT_UNDERLINE = re.compile(r" {0,3}(?:=+|-+)\s*")


def _strip_markdown_headings(blocks: list[str]) -> tuple[str | None, list[str]]:
    """Drop heading lines (headings are not passages); return the first level-1 heading's text."""
    first_h1: str | None = None
    kept: list[str] = []
    for block in blocks:
        lines = block.split("\n")
        if len(lines) == 2 and _SETEXT_UNDERLINE.fullmatch(lines[1]) and lines[0].strip():
            if first_h1 is None and lines[1].strip().startswith("="):
                first_h1 = lines[0].strip()
            continue
        body_lines = []
        for line in lines:
            heading = _ATX_HEADING.fullmatch(line)
            if heading is None:
                body_lines.append(line)
            elif first_h1 is None and len(heading.group("marks")) == 1 and heading.group("text"):
                first_h1 = heading.group("text").strip()
        remainder = "\n".join(body_lines).strip()
        if remainder:
            kept.append(remainder)
    return first_h1, kept


def _split_front_matter(text: str) -> tuple[dict[Any, Any] | None, str]:
    """(front matter mapping or None when there is none, the markdown body)."""
    handler = YAMLHandler()
    text = text.lstrip("\ufeff")
    if not handler.detect(text):
        return None, text
    try:
        front, body = handler.split(text)
    except ValueError:  # an opening '---' without a closing one: a horizontal rule, not front matter
        return None, text
    return _load_yaml_mapping(front, "front matter"), body


def _parse_markdown(key: str, text: str, sidecar: _Fields) -> list[ArticleDoc]:
    front, body = _split_front_matter(_normalise(text))
    front_fields = _read_fields(front, "front matter") if front is not None else _Fields()
    h1, blocks = _strip_markdown_headings(_split_blocks(body))
    stated_title = sidecar.values.get("title") or front_fields.values.get("title")
    if stated_title and blocks and blocks[0] == stated_title:
        blocks = blocks[1:]  # the title repeated as a plain first line
    guess = _Guess(title=h1)
    paragraphs = _article_from_blocks(blocks, guess, find_title=not (h1 or stated_title))
    return [_build_doc(key, guess, [front_fields, sidecar], paragraphs)]


def _paragraphs_from_text_field(text: str) -> list[str]:
    """Blocks split on blank lines, or on single newlines when the text has no blank lines."""
    text = _normalise(text).strip()
    if re.search(r"\n\s*\n", text):
        return _split_blocks(text)
    return [line.strip() for line in text.split("\n") if line.strip()]


def _record_to_doc(key: str, number: int, record: Any, sidecar: _Fields) -> ArticleDoc:
    if not isinstance(record, dict):
        raise SkipFile(f"record {number} is not a JSON object (found {type(record).__name__})")
    text = next((record[name] for name in ("text", "body", "content") if name in record), None)
    if not isinstance(text, str) or not text.strip():
        raise SkipFile(f"record {number} has no text")
    if "\x00" in text:
        raise SkipFile(f"record {number} text contains NUL characters")
    if not _is_text(text):
        raise SkipFile(f"record {number} text is not valid Unicode (it holds a lone surrogate such as \\ud800)")
    fields = _read_fields(record, f"record {number}")
    guess = _Guess()
    # the title is a separate field, so the text starts right after it (dek, byline, body)
    paragraphs = _article_from_blocks(_paragraphs_from_text_field(text), guess, find_title=False)
    if not paragraphs:
        raise SkipFile(f"record {number}: {_NO_TEXT}")
    return _build_doc(f"{key}#{number}", guess, [fields, sidecar], paragraphs)


def _json_records(key: str, text: str) -> list[Any]:
    if key.lower().endswith(".jsonl"):
        records = []
        for line_number, line in enumerate(_normalise(text).split("\n"), start=1):
            if line.strip():
                try:
                    records.append(_json_loads(line))
                except ValueError as exc:
                    reason = str(exc).split(": ", 1)[-1]
                    raise SkipFile(f"invalid JSON on line {line_number}: {reason}") from None
        return records
    try:
        data = _json_loads(text.lstrip("\ufeff"))
    except ValueError as exc:
        raise SkipFile(f"invalid JSON{_json_problem(exc)}") from None
    if isinstance(data, list):
        if not data:
            raise SkipFile("JSON file holds an empty list (no records)")
        return data
    if isinstance(data, dict):
        return [data]
    raise SkipFile(f"JSON file must hold an object or a list of objects, not {type(data).__name__}")


def _parse_json(key: str, text: str, sidecar: _Fields) -> list[ArticleDoc]:
    records = _json_records(key, text)
    return [_record_to_doc(key, number, record, sidecar) for number, record in enumerate(records, start=1)]


# htmldate: no "extensive" guessing from arbitrary text, prefer the original publication date.
_HTML_DATE_PARAMS = {"extensive_search": False, "original_date": True}


def _html_updated_date(html: str, published: dt.date | None) -> dt.date | None:
    """The page's most recent date (htmldate, strict), when later than the publication date."""
    from htmldate import find_date

    try:
        # deferred_url_extractor: a date in the URL is the publication date, look at the markup first
        found = find_date(html, extensive_search=False, original_date=False, deferred_url_extractor=True)
        updated = dt.date.fromisoformat(found) if found else None
    except Exception:  # third-party heuristics: an unreadable date is just no date
        return None
    return updated if updated and published and updated > published else None


def _html_fields(document: Any, html: str) -> _Fields:
    fields = _Fields()
    mapping = {
        "title": document.title,
        "source": document.sitename,
        "url": document.url,
        "description": document.description,
    }
    fields.values.update({name: value.strip() for name, value in mapping.items() if value and value.strip()})
    if document.author:
        fields.values["authors"] = tuple(name.strip() for name in document.author.split(";") if name.strip())
    published = coerce_date(document.date) if document.date else None
    if published:
        fields.values["published"] = published
    updated = _html_updated_date(html, published)
    if updated:
        fields.values["updated"] = updated
    return fields


def _parse_html(key: str, text: str, sidecar: _Fields) -> list[ArticleDoc]:
    import trafilatura  # imported on first use: it is slow to import and most corpora are plain text

    try:
        document = trafilatura.bare_extraction(
            text,
            with_metadata=True,
            include_comments=False,
            include_images=False,
            include_links=False,
            include_tables=True,
            date_extraction_params=_HTML_DATE_PARAMS,
        )
    except Exception as exc:  # third-party parser on arbitrary input
        raise SkipFile(f"could not read the HTML page ({type(exc).__name__})") from None
    if document is None or not (document.text or "").strip():
        raise SkipFile("no article text found in the HTML page")
    fields = _html_fields(document, text)
    lines = [line.strip() for line in _normalise(document.text).split("\n") if line.strip()]
    lines = [line for line in lines if line != fields.values.get("title")]
    guess = _Guess()
    paragraphs = _article_from_blocks(lines, guess, find_title=False)
    return [_build_doc(key, guess, [fields, sidecar], paragraphs)]


_PARSERS = {
    ".txt": _parse_plain_text,
    ".md": _parse_markdown,
    ".markdown": _parse_markdown,
    ".html": _parse_html,
    ".htm": _parse_html,
    ".json": _parse_json,
    ".jsonl": _parse_json,
}


def parse_file(key: str, data: bytes, sidecar: bytes = b"") -> list[ArticleDoc]:
    """Parse raw bytes by the suffix of key (see the module docstring). Raises SkipFile with a specific
    reason for anything that is not an indexable article; never any other exception."""
    suffix = os.path.splitext(key)[1].lower()
    parser = _PARSERS.get(suffix)
    if parser is None:
        raise SkipFile(f"unsupported file type {suffix or '(no suffix)'!r}")
    text = _decode(data)
    sidecar_fields = _sidecar_fields(sidecar)
    return parser(key, text, sidecar_fields)
