"""Turn article files (.txt, .md, .html, .json, .jsonl, .pdf) into clean articles with metadata.

The corpus is scraped news: titles, bylines and dates sit in loose "header" blocks, and the text is
interleaved with page furniture (related-link lists, newsletter prompts, photo captions, share
buttons, ...). This module separates the article body from that furniture with small, explicit
rules, and never rewrites the text it keeps but to repair mojibake (ftfy): every paragraph of a
plain-text article is otherwise a verbatim slice of the file.

Bylines and date lines are recognised in English, French, German and Spanish ("By", "Von", "Par",
"Por"; dates through embeddings.dates). A numeric date that could be read day first or month first
is read in the article's language's order (German, French, Spanish: day first) or DATE_ORDER, and
is otherwise left unread: the article stays undated, with a warning.

Text that is not UTF-8 is decoded when charset-normalizer tells its encoding plainly; the article
then carries a "decoded as <encoding>" warning.

Metadata precedence, per field: sidecar file > front matter / JSON record / HTML metadata > a guess
from the text. Anything unparseable raises SkipFile with a one-line reason, never another exception.
"""

from __future__ import annotations

import codecs
import datetime as dt
import errno
import functools
import hashlib
import json
import os
import re
import reprlib
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from frontmatter.default_handlers import YAMLHandler

from .dates import DATE_ORDERS, DateLine, WrittenDate, parse_date_line, read_date_value
from .language import DAY_FIRST, detect_language, language_code

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SUPPORTED_SUFFIXES",
    "ArticleDoc",
    "LeftOut",
    "SkipFile",
    "iter_corpus_files",
    "load_file",
    "parse_file",
    "sidecar_bytes",
]

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".json", ".jsonl", ".pdf")
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
SIDECAR_SUFFIXES = (".meta.json", ".meta.yaml", ".meta.yml")
_MAX_SIDECAR_BYTES = 1024 * 1024


class SkipFile(Exception):
    """A file that cannot be indexed; str(exc) is the one-line human reason, e.g.
    'not UTF-8 text (invalid byte 0xff at offset 120)', 'binary file', 'empty file',
    'larger than the 10 MB limit (52.4 MB)', 'symlink pointing outside the corpus folder',
    'invalid JSON on line 3: ...', 'no article text after removing page furniture'."""


@dataclass(frozen=True)
class ArticleDoc:
    key: str  # corpus-relative POSIX path; for .json/.jsonl records "file.jsonl#<id>" (parse.record_key)
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


def _sidecar_stem(name: str) -> str:
    """The part of an article's file name its sidecar shares: `a.txt` -> `a` (`a.meta.json`)."""
    suffix = Path(name).suffix
    return name[: -len(suffix)] if suffix else name


@dataclass
class LeftOut:
    """What a walk of the corpus folder passes over, so that a report accounts for every file."""

    not_articles: list[str] = field(default_factory=list)  # corpus-relative paths of files in no article format
    orphan_sidecars: list[str] = field(default_factory=list)  # metadata sidecars with no article beside them
    linked_folders: list[str] = field(default_factory=list)  # symlinks to folders, not followed
    hidden: int = 0  # files and folders whose name starts with '.', not looked into


def iter_corpus_files(
    root: Path, unreadable: list[OSError] | None = None, left_out: LeftOut | None = None
) -> list[Path]:
    """Sorted candidate files under root (recursive) with a supported suffix, excluding hidden files/dirs and
    sidecar files. Symlinks to files are returned too (load_file decides about them); symlinked
    directories are not descended into. A folder that cannot be listed is appended to
    `unreadable` (the error, with its path) rather than passed over in silence; the files passed
    over as not articles are listed in `left_out`."""
    root = Path(root)
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable.append if unreadable is not None else None):
        hidden = len(dirnames)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        hidden -= len(dirnames)
        articles, sidecars, others = [], [], []
        for name in filenames:
            if name.startswith("."):
                hidden += 1
            elif _is_sidecar_name(name):
                sidecars.append(name)
            elif name.lower().endswith(SUPPORTED_SUFFIXES):
                found.append(Path(dirpath) / name)
                articles.append(name)
            else:
                others.append(name)
        if left_out is not None:
            folder = Path(dirpath).relative_to(root)
            expected = {_sidecar_stem(a) + suffix for a in articles for suffix in SIDECAR_SUFFIXES}
            left_out.not_articles += [(folder / n).as_posix() for n in others]
            left_out.orphan_sidecars += [(folder / n).as_posix() for n in sidecars if n not in expected]
            left_out.linked_folders += [
                (folder / d).as_posix() for d in dirnames if os.path.islink(os.path.join(dirpath, d))
            ]
            left_out.hidden += hidden
    if left_out is not None:
        left_out.not_articles.sort()
        left_out.orphan_sidecars.sort()
        left_out.linked_folders.sort()
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
    stem = _sidecar_stem(path.name)
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


def _has_utf8_sequence(data: bytes) -> bool:
    """Whether data holds a well-formed multi-byte UTF-8 character: text that is UTF-8 but for a few
    damaged bytes, which no other encoding would read better."""
    return bool(re.search(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}", data))


def _encoding_name(codec: str) -> str:
    """'cp1252' -> 'windows-1252', 'latin_1' -> 'iso-8859-1': the names users know."""
    name = codecs.lookup(codec).name
    if re.fullmatch(r"cp125\d", name):
        return "windows-" + name[2:]
    return {"iso8859-1": "iso-8859-1", "latin-1": "iso-8859-1"}.get(name, name.replace("iso8859", "iso-8859"))


def _decode_legacy(data: bytes, not_utf8: str) -> tuple[str, str]:
    """Text in a single- or multi-byte legacy encoding, read the way charset-normalizer finds
    plainly best, and the encoding's name; SkipFile (starting with not_utf8) when it cannot tell.

    Equally plausible readings that give different text are not guessed between, with one
    exception: where Windows-1252 (the encoding of most legacy Western text, and what browsers read
    "latin-1" as) gives one of the best readings, it is used."""
    from charset_normalizer import from_bytes

    if _has_utf8_sequence(data):
        raise SkipFile(not_utf8)
    matches = list(from_bytes(data))
    if not matches:
        raise SkipFile(f"{not_utf8}, and no text encoding reads it")
    least_chaos = min(match.chaos for match in matches)
    best = [match for match in matches if match.chaos <= least_chaos + 0.01]
    try:
        western = data.decode("cp1252")
    except UnicodeDecodeError:
        western = None
    if western is not None and any(str(match) == western for match in best):
        return western, "windows-1252"
    readings = {str(match) for match in best}
    if len(readings) == 1 and least_chaos <= 0.1:
        return readings.pop(), _encoding_name(best[0].encoding)
    names = ", ".join(sorted({_encoding_name(match.encoding) for match in best})[:3])
    raise SkipFile(f"{not_utf8}, and its encoding cannot be told apart ({names}); save it as UTF-8")


def _decode(data: bytes) -> tuple[str, str | None]:
    """Decode file bytes to text, or SkipFile saying why they are not text. The second value names
    the legacy encoding assumed for text that is not UTF-8 (None for UTF-8/16/32)."""
    if not data:
        raise SkipFile("empty file")
    encoding = None
    text = _decode_with_bom(data)
    if text is None:
        kind = _binary_kind(data)
        if kind:
            raise SkipFile(f"binary file ({kind})")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            not_utf8 = f"not UTF-8 text (invalid byte 0x{data[exc.start]:02x} at offset {exc.start})"
            text, encoding = _decode_legacy(data, not_utf8)
    if "\x00" in text:
        raise SkipFile("binary file (contains NUL characters)")
    if len(_CONTROL_CHARS.findall(text)) > max(8, len(text) // 10):
        raise SkipFile("binary file (mostly control characters)")
    if not text.strip():
        raise SkipFile("whitespace-only text")
    return text, encoding


@functools.cache
def _ftfy_config():
    """ftfy set to repair mojibake (UTF-8 read in another encoding) and nothing else: quotes,
    ligatures, widths, line breaks, HTML entities and Unicode normalisation stay as written."""
    from ftfy import TextFixerConfig

    return TextFixerConfig(
        unescape_html=False, remove_terminal_escapes=False, fix_latin_ligatures=False, fix_character_width=False,
        uncurl_quotes=False, fix_line_breaks=False, remove_control_chars=False, normalization=None, explain=False,
    )  # fmt: skip


@functools.cache
def _mojibake_patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(a UTF-8 lead byte then a continuation byte, as read in one of ftfy's single-byte encodings:
    what every mojibake'd character starts with, found far faster than ftfy's detector;
    a UTF-8 no-break space read that way after a letter, which ftfy itself repairs only for
    Windows-1252's 'Â\xa0': Windows-1257 gives 'Ā\xa0')."""
    import ftfy.bad_codecs  # noqa: F401 - registers the sloppy-windows-* codecs
    from ftfy.chardata import CHARMAP_ENCODINGS

    def readings(first: int, last: int) -> str:
        chars = {
            bytes([byte]).decode(codec, "ignore") for codec in CHARMAP_ENCODINGS for byte in range(first, last + 1)
        }
        return re.escape("".join(sorted(chars - {""})))

    # ... or the lead byte of 'à' or of a no-break space followed by a space: ftfy repairs the
    # 0xA0 byte some software turned into a space ("voilÃ le travail")
    pair = re.compile(f"[{readings(0xC2, 0xF4)}][{readings(0x80, 0xBF)}\ufffd]|[{readings(0xC2, 0xC3)}] ")
    nbsp = {"\xc2\xa0".encode("latin-1").decode(codec) for codec in CHARMAP_ENCODINGS}
    return pair, re.compile(r"(?<=[a-z])(?:" + "|".join(map(re.escape, sorted(nbsp))) + ")")


_C1_OR_SURROGATE = re.compile("[\x80-\x9f\ud800-\udfff]")


def _repair_mojibake(text: str) -> str:
    if text.isascii():
        return text
    pair, nbsp = _mojibake_patterns()
    # The fixers used act only on such pairs, C1 controls and surrogates: without any, ftfy's
    # line-by-line pass (several ms on a long article) has nothing to do.
    if pair.search(text) or _C1_OR_SURROGATE.search(text):
        import ftfy

        text = ftfy.fix_text(text, _ftfy_config())
    return nbsp.sub("\xa0", text)


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
    "lang": "language",
    "language": "language",
}
_TEXT_FIELDS = ("title", "source", "url", "description")
_DATE_FIELDS = ("published", "updated")


@dataclass
class _Fields:
    """Metadata fields stated by one origin, plus what was wrong with the rest. Dates are kept as
    written (WrittenDate) until the article's date order is known."""

    values: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    bad_dates: dict[str, str] = field(default_factory=dict)  # field -> "front matter date 'soon' is not a date"
    date_origins: dict[str, str] = field(default_factory=dict)  # field -> "front matter date", for warnings


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


_CONJUNCTIONS = ("and", "und", "et")  # "y" only in a Spanish byline: it also joins double surnames


def _split_names(text: str, conjunctions: tuple[str, ...] = _CONJUNCTIONS) -> list[str]:
    """Author names in a list as people write it: 'A, B and C', 'A; B', 'A & B', and the
    bibliographic 'Lee, Chris and Park, Jin', whose names are turned to 'Chris Lee', 'Jin Park'."""
    joined = "|".join(conjunctions)
    parts = re.split(rf"\s*[;&]\s*|\s*,?\s+(?:{joined})\s+", text.strip())
    names: list[str] = []
    for part in filter(None, (part.strip(" ,") for part in parts)):
        if _is_inverted_name(part):
            surname, given = (side.strip() for side in part.split(","))
            names.append(f"{given} {surname}")
        else:
            names.extend(name.strip() for name in part.split(",") if name.strip())
    return names


def _is_inverted_name(part: str) -> bool:
    """'Lee, Chris' or 'van Gogh, Vincent': a surname, a comma, one given name (not 'Lee, CNN')."""
    if part.count(",") != 1:
        return False
    surname, given = (side.split() for side in part.split(","))
    surname_words = [word for word in surname if word.lower() not in _NAME_PARTICLES]
    return (
        len(surname_words) == 1 and len(given) == 1
        and _looks_like_name(" ".join(surname)) and _looks_like_name(given[0]) and not _is_publication_name(given[0])
    )  # fmt: skip


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
        elif name == "language":
            code = language_code(raw)
            if code is None:
                fields.warnings.append(f"{origin} {key} {_show(raw)} is not a language code; ignored")
            else:
                fields.values[name] = code
        else:
            written = read_date_value(raw)
            if written is None:
                fields.bad_dates.setdefault(name, f"{origin} {key} {_show(raw)} is not a date")
            else:
                fields.values[name] = written
                fields.date_origins[name] = f"{origin} {key}"
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
# "By", and the same word in German, French and Spanish bylines, with each language's "and".
_BY_WORDS = {"by": ("and",), "von": ("und",), "par": ("et",), "por": ("y",)}
_BY_LINE = re.compile(r"(?P<by>By|Von|Par|Por)\s+(?P<names>.+)", re.IGNORECASE)
_AUTHOR_LINE = re.compile(
    r"(?:Authors?|Written by|Autor(?:in|en)?|Auteure?s?|Autora?)\s*:\s*(?P<names>.+)", re.IGNORECASE
)
_BYLINE_PARTS = re.compile(r"\s+[|·•]\s+")  # "By Marcus Lee | Reuters", "By A · March 5, 2024"
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*$")
_MAX_HEADER_LINE = 200  # a byline or date line is short: a paragraph is not read as one


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


def _is_publication_name(text: str) -> bool:
    """'CNN', 'CNN Business', 'Reuters', 'The Associated Press', 'Antiwar.com': a publication or
    agency named after a byline's authors, not another author."""
    words = text.split()
    if not words or len(words) > 5:
        return False
    first = words[0]
    return (
        (first.isupper() and len(first.strip(".")) >= 2)  # CNN, AP, AFP, BBC News
        or bool(_AGENCY.fullmatch(text))
        or first == "The"
        or bool(re.search(r"\w\.(?:com|org|net|[a-z]{2})$", text))
    )


@dataclass(frozen=True)
class _Byline:
    names: tuple[str, ...]
    publication: str | None = None


def _byline(line: str, allow_by: bool = True) -> _Byline | None:
    """The authors (and a publication after them) of a line that is only a byline, else None:
    'By A and B', 'Author: X', 'Von Katrin Vogel', 'By Marcus Lee, CNN', 'By Marcus Lee | Reuters'."""
    if len(line) > _MAX_HEADER_LINE:
        return None
    parts = _BYLINE_PARTS.split(line.strip())
    match = _AUTHOR_LINE.fullmatch(parts[0]) or (_BY_LINE.fullmatch(parts[0]) if allow_by else None)
    if match is None or len(parts) > 2:
        return None
    by = match.groupdict().get("by")
    conjunctions = (*_BY_WORDS[by.lower()], *_CONJUNCTIONS) if by else _CONJUNCTIONS
    text, publication = match.group("names"), None
    if len(parts) == 2:  # "By Marcus Lee | Reuters": what follows the bar is the publication
        publication = parts[1].strip()
        if not (_is_publication_name(publication) or _looks_like_name(publication)):
            return None
    else:  # "By Marcus Lee, CNN", "Von Anna Schmidt, Tagesspiegel"
        head, comma, tail = text.rpartition(",")
        tail = tail.strip()
        if comma and (
            _is_publication_name(tail)
            or (len(tail.split()) == 1 and len((_split_names(head, conjunctions) or [""])[-1].split()) >= 2)
        ):
            text, publication = head, tail
    names = _split_names(text, conjunctions)
    if names and all(_looks_like_name(name) for name in names):
        return _Byline(tuple(names), publication)
    return None


@dataclass
class _Guess:
    """Metadata read from the text itself (lowest precedence). Dates stay as written until the
    article's date order is known (_build_doc)."""

    title: str | None = None
    description: str | None = None
    authors: list[str] = field(default_factory=list)
    source: str | None = None
    published: list[WrittenDate] = field(default_factory=list)
    updated: list[WrittenDate] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add_authors(self, names: tuple[str, ...] | list[str]) -> None:
        self.authors.extend(name for name in names if name not in self.authors)

    def add(self, item: _Byline | DateLine) -> None:
        if isinstance(item, DateLine):
            self.published += [item.published] if item.published else []
            self.updated += [item.updated] if item.updated else []
        else:
            self.add_authors(item.names)
            self.source = self.source or item.publication


def _header_line(line: str) -> list[_Byline | DateLine] | None:
    """What a line that is only a byline and/or date lines says, else None: 'By A', 'March 5, 2024',
    and the two on one line: 'By Sharif Hassan · Aug 9, 2021', 'By A | Reuters | March 5, 2024'."""
    line = line.strip()
    if len(line) > _MAX_HEADER_LINE:
        return None
    whole = _byline(line) or parse_date_line(line)
    if whole is not None:
        return [whole]
    parts = _BYLINE_PARTS.split(line)
    if len(parts) < 2:
        return None
    items: list[_Byline | DateLine] = []
    for part in parts:
        item = _byline(part) or parse_date_line(part)
        if item is None and items and isinstance(items[-1], _Byline) and items[-1].publication is None:
            if not (_is_publication_name(part) or _looks_like_name(part)):
                return None
            items[-1] = _Byline(items[-1].names, part)  # "By A | Reuters | ...": the byline's publication
        elif item is None:
            return None
        else:
            items.append(item)
    return items


def _header_lines(block: str) -> list[_Byline | DateLine] | None:
    """Parsed lines when every line of the block is a byline or a date line, else None."""
    parsed = []
    for line in block.split("\n"):
        items = _header_line(line)
        if items is None:
            return None
        parsed += items
    return parsed


def _split_header(block: str) -> tuple[list[_Byline | DateLine], str]:
    """The byline and date lines at the start of a block, and the rest of the block ('' if none):
    '05.03.2024' or 'Posted: 03/05/2024' written right above the first paragraph, no blank line."""
    lines = block.split("\n")
    parsed = []
    for n, line in enumerate(lines):
        items = _header_line(line)
        if items is None:
            return parsed, "\n".join(lines[n:]).strip()
        parsed += items
    return parsed, ""


def _ends_sentence(block: str) -> bool:
    return bool(_SENTENCE_END.search(block))


def _looks_like_title(block: str, more_follows: bool) -> bool:
    return (
        more_follows  # a lone block is the article, not its title
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


def _take_header_blocks(blocks: list[str], i: int, guess: _Guess) -> int:
    """Record the byline/date blocks from blocks[i] on; returns the index of the first other block,
    which loses the header lines it starts with (blocks is changed in place)."""
    while i < min(len(blocks), _HEADER_ZONE):
        items, rest = _split_header(blocks[i])
        for item in items:
            guess.add(item)
        if rest:
            blocks[i] = rest
            break
        i += 1
    return i


def _read_header(blocks: list[str], guess: _Guess, find_title: bool) -> list[str]:
    """Fill guess from the header zone; returns the body blocks."""
    blocks = list(blocks)
    i = _take_header_blocks(blocks, 0, guess)  # bylines/dates above the title (unusual, but seen)
    title_known = not find_title
    if find_title and i < len(blocks):
        first_line, _, rest = blocks[i].partition("\n")
        header = _header_lines(rest) if rest else None
        if header and _looks_like_title(first_line, more_follows=i + 1 < len(blocks)):
            guess.title, title_known = first_line, True  # "Headline\nBy A\nMarch 5, 2024" in one block
            for item in header:
                guess.add(item)
            i += 1
        elif _looks_like_title(blocks[i], more_follows=i + 1 < len(blocks)):
            guess.title, title_known = blocks[i], True
            i += 1
    if title_known and i < len(blocks) and _looks_like_dek(blocks, i):
        guess.description = blocks[i]
        i += 1
    i = _take_header_blocks(blocks, i, guess)
    return blocks[i:]


# "<Name> is Senior Editor for Antiwar.com. He has ..." states the publication.
_BIO_VERBS = r"(?:is|was|has|writes|covers|reports|edits)\b"
_BIO_PUBLICATION = re.compile(
    r"\s+is\s+[^.]{1,80}?\s+(?:for|at)\s+(?P<publication>(?:the\s+)?[A-Z0-9]\S*(?:\s+[A-Z0-9]\S*){0,5}?)\.(?:\s|$)"
)
_MAX_BIO_CHARS = 500


def _bio_of(block: str, names: list[str] | tuple[str, ...]) -> str | None:
    """The author's name when block is a bio of one of names ('Jason Ditz is ...'), else None."""
    for name in names:
        if block.startswith(name) and re.match(r"\s+" + _BIO_VERBS, block[len(name) :]):
            return name
    return None


def _take_bio(block: str, name: str, guess: _Guess) -> None:
    match = _BIO_PUBLICATION.match(block[len(name) :])
    if match and guess.source is None:
        guess.source = match.group("publication")


def _take_author_lines(blocks: list[str], guess: _Guess) -> list[str]:
    """Remove 'Author: X' blocks (anywhere) and the author bio right after one, and a closing bio
    of a byline's author; a bio may state the publication ('X is Senior Editor for Antiwar.com.')."""
    kept: list[str] = []
    i = 0
    while i < len(blocks):
        byline = _byline(blocks[i], allow_by=False) if "\n" not in blocks[i] else None
        if byline is None:
            kept.append(blocks[i])
            i += 1
            continue
        guess.add(byline)
        i += 1
        if i < len(blocks) and (name := _bio_of(blocks[i], byline.names)):
            _take_bio(blocks[i], name, guess)
            i += 1
    if len(kept) > 1 and len(kept[-1]) <= _MAX_BIO_CHARS and (name := _bio_of(kept[-1], guess.authors)):
        _take_bio(kept.pop(), name, guess)  # "Marcus Lee is a reporter for CNN." closing the article
    return kept


# --------------------------------------------------------------------------------------------------
# Page furniture: blocks that are not article text
# --------------------------------------------------------------------------------------------------

# A line of markdown links: a list item, or several separated by bars: "[Read more](…) | [Subscribe](…)"
_LINK_ITEM = re.compile(r"(?:[-*+•]|\d+[.)])?\s*(?:\[[^\]]*\]\([^)]*\)[\s.,|·•/–—-]*)+")
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
# "Read more: …", "See also: …", "Lesen Sie auch: …", "À lire aussi : …", "Lee también: …"
_READ_MORE_LINE = re.compile(
    r"(?:read more|read also|also read|see also|related|lesen sie (?:auch|mehr)|mehr zum thema|auch interessant"
    r"|(?:à )?lire aussi|voir aussi|lee también|leer más|ver también|te puede interesar)\s*[:»>|–—]\s*\S.{0,200}",
    re.IGNORECASE,
)
# "Share this article: Facebook Twitter Email", alone or glued to the text before or after it
_SHARE_TARGET = (
    r"(?:on\s+|via\s+)?(?:Facebook|Twitter|X|E-?mail|WhatsApp|LinkedIn|Reddit|Telegram|Pinterest|Flipboard"
    r"|Messenger|Threads|Bluesky|Mastodon|Print|Copy link|SMS)\b[\s,|·•/]*"
)
_SHARE_LABEL = (
    r"(?:share(?:\s+(?:this|the)\s+(?:article|story|post|page))?|(?:artikel\s+)?teilen|partager(?:\s+cet\s+article)?"
    r"|compartir(?:\s+(?:este|esta)\s+(?:artículo|noticia))?)\s*:?\s*"
)
_FURNITURE_LINE_START = re.compile(
    r"^\s*(?:read|see also|related|lesen|mehr zum|auch interessant|à lire|lire|voir|lee|leer|ver también|te puede)",
    re.IGNORECASE | re.MULTILINE,
)
_SHARE_WORDS = ("share", "teilen", "partager", "compartir")
_SHARE_LINE = re.compile(rf"{_SHARE_LABEL}(?:{_SHARE_TARGET})+", re.IGNORECASE)
_SHARE_GLUED_BEFORE = re.compile(rf"{_SHARE_LABEL}(?:{_SHARE_TARGET}){{2,}}(?=\S)", re.IGNORECASE)
_SHARE_GLUED_AFTER = re.compile(rf"(?<=[.!?…\"”’])\s+{_SHARE_LABEL}(?:{_SHARE_TARGET}){{2,}}$", re.IGNORECASE)
_SHORT_BLOCK = 300  # furniture blocks are short; long blocks are article text whatever they mention


def _is_link_list(block: str) -> bool:
    """Every line is made of markdown links (a list item, or links separated by bars): 'related
    articles' lists and rows of links."""
    return all(_LINK_ITEM.fullmatch(line.strip()) for line in block.split("\n"))


def _is_furniture_line(line: str) -> bool:
    return len(line) <= 250 and bool(_READ_MORE_LINE.fullmatch(line) or _SHARE_LINE.fullmatch(line))


def _cut_furniture_lines(block: str) -> list[str]:
    """The block without its 'Read more: …' and share lines, cut into pieces where they were, and
    without a share prompt glued before or after a sentence: every piece stays a verbatim slice."""
    lowered = block.lower()
    if not (_FURNITURE_LINE_START.search(block) or any(word in lowered for word in _SHARE_WORDS)):
        return [block]  # the full patterns cost far more than these lookups, on every block
    pieces: list[str] = []
    current: list[str] = []

    def cut() -> None:
        if current:
            pieces.append("\n".join(current).strip())
            current.clear()

    for line in block.split("\n"):
        stripped = line.strip()
        if _is_furniture_line(stripped):
            cut()
            continue
        before = _SHARE_GLUED_BEFORE.match(stripped)
        if before:
            cut()
            stripped = stripped[before.end() :]
        after = _SHARE_GLUED_AFTER.search(stripped)
        if after:
            current.append(stripped[: after.start()])
            cut()
            continue
        current.append(stripped if before else line)
    cut()
    return [piece for piece in pieces if piece]


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
    blocks = [piece for block in blocks for piece in _cut_furniture_lines(block)]
    body = _take_author_lines(_read_header(blocks, guess, find_title), guess)
    return _remove_furniture(body)


def _date_order(language: str | None, setting: str | None) -> str | None:
    """How to read the article's numeric dates: day first in a language that always writes them so,
    else as DATE_ORDER says (None: an ambiguous one stays unread)."""
    return "DMY" if language in DAY_FIRST else setting


def _build_doc(
    key: str, guess: _Guess, stated: list[_Fields], paragraphs: list[str], date_order: str | None = None
) -> ArticleDoc:
    """Combine text guesses with stated metadata; later entries of `stated` win over earlier ones."""
    if not paragraphs:
        raise SkipFile(_NO_TEXT)
    written_dates = [*guess.published, *guess.updated, *(
        value for fields in stated for value in fields.values.values() if isinstance(value, WrittenDate)
    )]  # fmt: skip
    order = date_order
    if any(written.ambiguous for written in written_dates):  # only then does the language matter
        language = next((f.values["language"] for f in reversed(stated) if "language" in f.values), None)
        order = _date_order(language or detect_language(paragraphs), date_order)
    values: dict[str, Any] = {
        "title": guess.title,
        "source": guess.source,
        "authors": tuple(guess.authors),
        "published": None,
        "updated": None,
        "url": None,
        "description": guess.description,
    }
    unread: dict[str, list[str]] = {"published": [], "updated": []}  # dates in the text that gave none
    for name, written_dates in (("published", guess.published), ("updated", guess.updated)):
        for written in written_dates:
            date = written.date(order)
            if date is None:
                unread[name].append(f"date {written.text!r} in the text {written.problem(order)}")
            values[name] = values[name] or date
    warnings = list(guess.warnings)
    bad_dates: dict[str, str] = {}
    for fields in stated:
        given = {name: value for name, value in fields.values.items() if name != "language"}
        for name in _DATE_FIELDS:
            if isinstance(written := given.get(name), WrittenDate):
                given[name] = written.date(order)
                if given[name] is None:
                    del given[name]
                    bad_dates[name] = f"{fields.date_origins[name]} {_show(written.text)} {written.problem(order)}"
        values.update(given)
        warnings.extend(fields.warnings)
        bad_dates.update({name: note for name, note in fields.bad_dates.items() if name not in given})
    for name, notes in unread.items():
        for note in notes if values[name] is None else ():
            warnings.append(f"{note}; {'article kept undated' if name == 'published' else 'ignored'}")
    for name, note in bad_dates.items():
        if values[name] is not None:
            warnings.append(f"{note}; using {values[name].isoformat()} instead")
        elif name == "published":
            warnings.append(f"{note}; article kept undated")
        else:
            warnings.append(f"{note}; ignored")
    return ArticleDoc(key=key, paragraphs=tuple(paragraphs), warnings=tuple(warnings), **values)


# --------------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------------


def _parse_plain_text(key: str, text: str, sidecar: _Fields, date_order: str | None) -> list[ArticleDoc]:
    guess = _Guess()
    paragraphs = _article_from_blocks(_split_blocks(text), guess, find_title=True)
    return [_build_doc(key, guess, [sidecar], paragraphs, date_order)]


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


def _parse_markdown(key: str, text: str, sidecar: _Fields, date_order: str | None) -> list[ArticleDoc]:
    front, body = _split_front_matter(_normalise(text))
    front_fields = _read_fields(front, "front matter") if front is not None else _Fields()
    h1, blocks = _strip_markdown_headings(_split_blocks(body))
    stated_title = sidecar.values.get("title") or front_fields.values.get("title")
    if stated_title and blocks and blocks[0] == stated_title:
        blocks = blocks[1:]  # the title repeated as a plain first line
    guess = _Guess(title=h1)
    paragraphs = _article_from_blocks(blocks, guess, find_title=not (h1 or stated_title))
    return [_build_doc(key, guess, [front_fields, sidecar], paragraphs, date_order)]


def _paragraphs_from_text_field(text: str) -> list[str]:
    """Blocks split on blank lines, or on single newlines when the text has no blank lines."""
    text = _normalise(text).strip()
    if re.search(r"\n\s*\n", text):
        return _split_blocks(text)
    return [line.strip() for line in text.split("\n") if line.strip()]


_MAX_ID_CHARS = 80


def _record_id(record: dict) -> str | None:
    """The record's `id` (text or integer) as shown in its key: on one line, control and bidi
    characters dropped, at most 80 characters; None when it has no usable one."""
    value = record.get("id")
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        return None
    shown = re.sub(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]", "", " ".join(str(value).split()))
    return shown[:_MAX_ID_CHARS] if shown and _is_text(shown) else None


def record_key(key: str, record: dict) -> str:
    """`file.jsonl#<id>` for a record with an `id`, else `file.jsonl#<12 hex digits of its content's
    hash>`: a record keeps its key, and its citations, when other records are added, edited or
    removed."""
    shown = _record_id(record)
    if shown is not None:
        return f"{key}#{shown}"
    content = json.dumps(record, sort_keys=True, ensure_ascii=True).encode()
    return f"{key}#{hashlib.sha256(content).hexdigest()[:12]}"


def _record_to_doc(key: str, number: int, record: Any, sidecar: _Fields, date_order: str | None) -> ArticleDoc:
    """The article of one record; SkipFile (reason without the record's place) when it has none."""
    if not isinstance(record, dict):
        raise SkipFile(f"is not a JSON object (found {type(record).__name__})")
    text = next((record[name] for name in ("text", "body", "content") if name in record), None)
    if not isinstance(text, str) or not text.strip():
        raise SkipFile('has no text (a "text", "body" or "content" field)')
    if "\x00" in text:
        raise SkipFile("text contains NUL characters")
    if not _is_text(text):
        raise SkipFile("text is not valid Unicode (it holds a lone surrogate such as \\ud800)")
    fields = _read_fields(record, f"record {number}")
    guess = _Guess()
    # the title is a separate field, so the text starts right after it (dek, byline, body)
    paragraphs = _article_from_blocks(_paragraphs_from_text_field(text), guess, find_title=False)
    if not paragraphs:
        raise SkipFile(_NO_TEXT)
    return _build_doc(record_key(key, record), guess, [fields, sidecar], paragraphs, date_order)


@dataclass(frozen=True)
class _BadLine:
    reason: str


def _json_records(key: str, text: str) -> list[tuple[int, Any]]:
    """(place, record) pairs: the line number in a .jsonl file (a line that is not JSON is a
    _BadLine there, so the others are still read), the record number in a .json list."""
    if key.lower().endswith(".jsonl"):
        records = []
        for line_number, line in enumerate(_normalise(text).split("\n"), start=1):
            if line.strip():
                try:
                    records.append((line_number, _json_loads(line)))
                except ValueError as exc:
                    records.append((line_number, _BadLine(f"invalid JSON: {str(exc).split(': ', 1)[-1]}")))
        return records
    try:
        data = _json_loads(text.lstrip("\ufeff"))
    except ValueError as exc:
        raise SkipFile(f"invalid JSON{_json_problem(exc)}") from None
    if isinstance(data, list):
        if not data:
            raise SkipFile("JSON file holds an empty list (no records)")
        return list(enumerate(data, start=1))
    if isinstance(data, dict):
        return [(1, data)]
    raise SkipFile(f"JSON file must hold an object or a list of objects, not {type(data).__name__}")


def _parse_json(
    key: str, text: str, sidecar: _Fields, date_order: str | None, skipped: list[tuple[str, str]] | None = None
) -> list[ArticleDoc]:
    """One article per record. A record that cannot be read is left out, with its place and why
    appended to `skipped` as ("file.jsonl#<line or record number>", reason); when none can be read,
    the file is skipped (SkipFile naming the first problem)."""
    jsonl = key.lower().endswith(".jsonl")
    docs: list[ArticleDoc] = []
    problems: list[tuple[int, str]] = []
    place_of: dict[str, int] = {}  # key -> where the record that has it is
    for place, record in _json_records(key, text):
        try:
            if isinstance(record, _BadLine):
                raise SkipFile(record.reason)
            doc = _record_to_doc(key, place, record, sidecar, date_order)
        except SkipFile as exc:
            problems.append((place, str(exc)))
            continue
        if doc.key in place_of:
            first = f"{'line' if jsonl else 'record'} {place_of[doc.key]}"
            problems.append(
                (
                    place,
                    f"same id as {first}; only the first is indexed"
                    if _record_id(record) is not None
                    else f"identical to {first}; indexed once",
                )
            )
            continue
        place_of[doc.key] = place
        docs.append(doc)
    if not docs:
        if not problems:
            raise SkipFile("no records")
        place, reason = problems[0]
        if reason.startswith("invalid JSON: "):
            raise SkipFile(f"invalid JSON on line {place}: {reason.removeprefix('invalid JSON: ')}")
        raise SkipFile(
            f"record {place} {reason}" if reason.startswith(("is ", "has ", "text ")) else f"record {place}: {reason}"
        )
    if skipped is not None:
        skipped += [(f"{key}#{place}", reason) for place, reason in problems]
    return docs


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


_HTML_LANG = re.compile(r"<html\b[^>]*?\blang\s*=\s*[\"']?([A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*)", re.IGNORECASE)


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
    published = read_date_value(document.date) if document.date else None
    if published and published.date():
        fields.values["published"] = published
        fields.date_origins["published"] = "HTML date"
    updated = _html_updated_date(html, published.date() if published else None)
    if updated:
        fields.values["updated"] = read_date_value(updated)
        fields.date_origins["updated"] = "HTML date"
    language = _HTML_LANG.search(html, 0, 4096)
    if language and language_code(language.group(1)):
        fields.values["language"] = language_code(language.group(1))
    return fields


def _parse_html(key: str, text: str, sidecar: _Fields, date_order: str | None) -> list[ArticleDoc]:
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
    return [_build_doc(key, guess, [fields, sidecar], paragraphs, date_order)]


_PAGE_NUMBER = re.compile(r"(?:page\s+)?\d{1,4}(?:\s*(?:of|/)\s*\d{1,4})?", re.IGNORECASE)


def _pdf_pages(data: bytes) -> list[str]:
    """The text of each page, laid out as on the page (blank lines where the page has gaps)."""
    import io
    import logging

    from pypdf import PdfReader  # imported on first use, like trafilatura

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its notes on odd files are not the report's
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise SkipFile("encrypted PDF (it needs a password)")
        return [page.extract_text(extraction_mode="layout") or "" for page in reader.pages]
    except SkipFile:
        raise
    except Exception as exc:  # third-party parser on arbitrary input
        raise SkipFile(f"could not read the PDF ({type(exc).__name__})") from None


def _pdf_blocks(page: str) -> list[str]:
    """A page's blocks of lines, as separated by gaps on the page, without page numbers."""
    blocks = []
    for block in _split_blocks(page):
        lines = [" ".join(line.split()) for line in block.split("\n")]  # layout spacing is not text
        text = "\n".join(line for line in lines if line)
        if text and not _PAGE_NUMBER.fullmatch(text):
            blocks.append(text)
    return blocks


def _join_pdf_lines(paragraph: str) -> str:
    """One line per paragraph: a PDF's line breaks are where the page ran out of width, not the
    writer's. A word hyphenated across lines is rejoined with its hyphen (it may be a compound's)."""
    text = ""
    for line in paragraph.split("\n"):
        text = text + line if text.endswith("-") and line[:1].islower() else f"{text} {line}".lstrip()
    return text


def _parse_pdf(key: str, data: bytes, sidecar: _Fields, date_order: str | None) -> list[ArticleDoc]:
    """The text layer of a PDF, read like a plain-text article (title, byline, dates, body)."""
    blocks: list[str] = []
    for page in _pdf_pages(data):
        page_blocks = _pdf_blocks(_repair_mojibake(page))
        if blocks and page_blocks and not _ends_sentence(blocks[-1]) and page_blocks[0][:1].islower():
            blocks[-1] += "\n" + page_blocks.pop(0)  # a paragraph running on to the next page
        blocks += page_blocks
    if not blocks:
        raise SkipFile("no text in the PDF (scanned pages without a text layer are not read)")
    guess = _Guess()
    paragraphs = _article_from_blocks(blocks, guess, find_title=True)
    return [_build_doc(key, guess, [sidecar], [_join_pdf_lines(p) for p in paragraphs], date_order)]


_PARSERS = {
    ".txt": _parse_plain_text,
    ".md": _parse_markdown,
    ".markdown": _parse_markdown,
    ".html": _parse_html,
    ".htm": _parse_html,
    ".json": _parse_json,
    ".jsonl": _parse_json,
}


def parse_file(
    key: str,
    data: bytes,
    sidecar: bytes = b"",
    *,
    date_order: str | None = None,
    skipped: list[tuple[str, str]] | None = None,
) -> list[ArticleDoc]:
    """Parse raw bytes by the suffix of key (see the module docstring). `date_order` ("DMY" or
    "MDY", the DATE_ORDER setting) reads numeric dates that the article's language does not decide.
    Raises SkipFile with a specific reason for anything that is not an indexable article; never any
    other exception. The records of a .json/.jsonl file that cannot be read are left out and
    appended to `skipped` as ("file.jsonl#<line or record number>", reason)."""
    if date_order not in (None, *DATE_ORDERS):
        raise ValueError(f"date_order must be one of {DATE_ORDERS} or None, not {date_order!r}")
    suffix = os.path.splitext(key)[1].lower()
    if suffix == ".pdf":  # read from its bytes, not from decoded text
        return _parse_pdf(key, data, _sidecar_fields(sidecar), date_order)
    parser = _PARSERS.get(suffix)
    if parser is None:
        raise SkipFile(f"unsupported file type {suffix or '(no suffix)'!r}")
    text, encoding = _decode(data)
    if parser is _parse_json:
        docs = _parse_json(key, _repair_mojibake(text), _sidecar_fields(sidecar), date_order, skipped)
    else:
        docs = parser(key, _repair_mojibake(text), _sidecar_fields(sidecar), date_order)
    if encoding:  # once per file, on its first article
        docs[0] = replace(docs[0], warnings=(f"decoded as {encoding}", *docs[0].warnings))
    return docs
