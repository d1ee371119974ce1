"""Fetch the feeds and write their new entries as articles under corpus/feeds/<name>/.

Each entry becomes one .md file with YAML front matter (title, authors, date, url, source) that the
index job reads as any other article. The text is the article page's, extracted by trafilatura;
when the page cannot be used (gone, too slow, too large, robots.txt) it is the feed's own content
or summary as plain text, and the front matter says so (`text_from: feed`). Dates are the feed's or
the page's stated metadata, never guessed. Every failure is one line in the report, and the other
entries and feeds go on.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

import yaml

from ..config import Settings
from ..terminal import counted
from . import registry
from .http import FetchError, HttpClient, RefusedAddressError, check_url

logger = logging.getLogger(__name__)

FEEDS_FOLDER = "feeds"  # under the corpus folder


@dataclass
class FetchReport:
    feeds: int = 0  # feeds asked for
    unchanged: int = 0  # answered 304 Not Modified
    failed_feeds: int = 0  # could not be fetched or read at all
    written: list[str] = field(default_factory=list)  # corpus-relative paths of the articles written
    from_feed: int = 0  # of those, how many hold the feed's content/summary, not the page's text
    left_for_later: int = 0  # new entries over FEEDS_MAX_NEW_PER_FETCH, fetched next time
    failures: list[str] = field(default_factory=list)  # one line each: which feed or URL, why
    notes: list[str] = field(default_factory=list)  # pages not used, the feed's text written instead

    def as_dict(self) -> dict:
        return {
            "feeds": self.feeds,
            "unchanged": self.unchanged,
            "failed_feeds": self.failed_feeds,
            "written": list(self.written),
            "from_feed": self.from_feed,
            "left_for_later": self.left_for_later,
            "failures": list(self.failures),
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        return (
            f"{counted(self.feeds, 'feed')} fetched ({self.unchanged} unchanged): "
            f"{counted(len(self.written), 'new article')} written ({self.from_feed} from the feed's own text), "
            f"{counted(len(self.failures), 'failure')}"
            + (f", {self.left_for_later} left for the next fetch" if self.left_for_later else "")
        )


@dataclass
class Entry:
    url: str
    title: str | None = None
    authors: tuple[str, ...] = ()
    date: str | None = None  # as stated by the feed (ISO 8601 where it could be read so)
    text: str | None = None  # the feed's content or summary, as plain text


@dataclass
class ParsedFeed:
    title: str | None
    entries: list[Entry]


# ------------------------------------------------------------------------------------------ parsing


class _TextFromHtml(HTMLParser):
    """Plain text of an HTML fragment: block elements end paragraphs; scripts and styles dropped."""

    _BLOCKS = {"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "tr", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skipping += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.skipping = max(0, self.skipping - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def plain_text(fragment: str) -> str:
    """An HTML (or plain text) fragment of a feed as paragraphs of plain text."""
    parser = _TextFromHtml()
    parser.feed(fragment)
    parser.close()
    paragraphs = (re.sub(r"\s+", " ", p).strip() for p in "".join(parser.parts).split("\n\n"))
    return "\n\n".join(p for p in paragraphs if p)


def _stated_date(raw: object, parsed: time.struct_time | None = None) -> str | None:
    """A feed's date as ISO 8601 with its own offset; None when the feed states none."""
    if isinstance(raw, str) and raw.strip():
        raw = raw.strip()
        try:
            return email.utils.parsedate_to_datetime(raw).isoformat()  # RSS: RFC 822
        except (TypeError, ValueError, IndexError):
            pass
        try:
            return dt.datetime.fromisoformat(raw.replace("Z", "+00:00")).isoformat()  # Atom, JSON Feed
        except ValueError:
            pass
    if parsed:  # feedparser read a form the two above do not: its reading, in UTC
        return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", parsed)
    return None


def _json_feed(data: dict) -> ParsedFeed:
    entries = []
    for item in data.get("items") or []:
        if not isinstance(item, dict):
            continue
        url = item.get("url") or item.get("external_url")
        if not isinstance(url, str):
            continue
        authors = item.get("authors") or ([item["author"]] if isinstance(item.get("author"), dict) else [])
        names = tuple(a["name"].strip() for a in authors if isinstance(a, dict) and isinstance(a.get("name"), str))
        text = item.get("content_html") or item.get("content_text") or item.get("summary")
        entries.append(
            Entry(
                url=url.strip(),
                title=item.get("title") if isinstance(item.get("title"), str) else None,
                authors=tuple(n for n in names if n),
                date=_stated_date(item.get("date_published")) or _stated_date(item.get("date_modified")),
                text=plain_text(text) if isinstance(text, str) else None,
            )
        )
    title = data.get("title")
    return ParsedFeed(title if isinstance(title, str) else None, entries)


def parse_feed(body: bytes, content_type: str = "", base_url: str = "") -> ParsedFeed:
    """The feed's title and entries, their links made absolute against base_url (where the feed
    was fetched from); FeedsError "not a feed" for anything else."""
    head = body.lstrip()[:1]
    if head == b"{" or "json" in content_type:
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise registry.FeedsError(f"not a feed: invalid JSON ({exc})") from None
        if not (isinstance(data, dict) and str(data.get("version", "")).startswith("https://jsonfeed.org/version/")):
            raise registry.FeedsError("not a feed: JSON without a JSON Feed version")
        parsed_json = _json_feed(data)
        for entry in parsed_json.entries:
            entry.url = urldefrag(urljoin(base_url, entry.url)).url
        return parsed_json
    import feedparser  # loaded only when a feed is read

    headers = {"content-type": content_type} if content_type else {}
    if base_url:
        headers["content-location"] = base_url  # feedparser's base for relative links
    parsed = feedparser.parse(body, response_headers=headers or None)
    if not parsed.version and not parsed.entries:
        reason = parsed.get("bozo_exception")
        raise registry.FeedsError(f"not a feed (no RSS, Atom or JSON Feed{f': {reason}' if reason else ''})")
    entries = []
    for item in parsed.entries:
        url = item.get("link")
        if not isinstance(url, str) or not url.strip():
            continue
        names = [a.get("name", "") for a in item.get("authors", []) if isinstance(a, dict)]
        names = names or ([item["author"]] if isinstance(item.get("author"), str) else [])
        content = item.get("content") or []
        text = (content[0].get("value") if content else None) or item.get("summary")
        entries.append(
            Entry(
                url=urldefrag(urljoin(base_url, url.strip())).url,
                title=item.get("title") or None,
                authors=tuple(n.strip() for n in names if n and n.strip()),
                date=_stated_date(item.get("published"), item.get("published_parsed"))
                or _stated_date(item.get("updated"), item.get("updated_parsed")),
                text=plain_text(text) if isinstance(text, str) else None,
            )
        )
    if parsed.bozo and not entries:  # a broken feed with usable entries is read; real feeds often are a little broken
        raise registry.FeedsError(f"malformed feed ({parsed.get('bozo_exception')})")
    return ParsedFeed(parsed.feed.get("title") or None, entries)


# ------------------------------------------------------------------------------------------ pages


class _Meta(HTMLParser):
    """The page's own statements in <meta> tags: what it names itself, its authors and dates."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.title: str | None = None
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "meta":
            key = (attrs.get("property") or attrs.get("name") or attrs.get("itemprop") or "").strip().lower()
            if key and attrs.get("content") and key not in self.meta:
                self.meta[key] = attrs["content"].strip()
        elif tag == "title" and self.title is None:
            self._in_title = True

    def handle_endtag(self, tag):
        self._in_title = False if tag == "title" else self._in_title

    def handle_data(self, data):
        if self._in_title:
            self.title = (self.title or "") + data


@dataclass
class Page:
    text: str
    title: str | None
    site: str | None
    authors: tuple[str, ...]
    date: str | None


def _decoded(body: bytes, content_type: str) -> str:
    """A page's text: in the charset its Content-Type names, else UTF-8, else charset-normalizer's best guess."""
    stated = re.search(r"charset=[\"']?([\w.:-]+)", content_type, re.IGNORECASE)
    for encoding in (stated.group(1) if stated else None, "utf-8"):
        if encoding:
            try:
                return body.decode(encoding)
            except (LookupError, UnicodeDecodeError):
                pass
    from charset_normalizer import from_bytes

    best = from_bytes(body).best()
    return str(best) if best is not None else body.decode("utf-8", "replace")


def read_page(body: bytes, content_type: str = "") -> Page | None:
    """The article text and stated metadata of an HTML page; None when there is no article text."""
    import trafilatura  # loaded only when a page is read

    markup = _decoded(body, content_type)
    text = trafilatura.extract(markup, include_comments=False, include_tables=False, with_metadata=False)
    if not text or not text.strip():
        return None
    meta = _Meta()
    try:
        meta.feed(markup)
        meta.close()
    except Exception:  # noqa: BLE001 - html.parser on hostile markup; the text stands without metadata
        meta = _Meta()
    m = meta.meta
    author = m.get("author") or m.get("article:author")
    date = m.get("article:published_time") or m.get("datepublished") or m.get("date") or m.get("dc.date")
    title = m.get("og:title") or (meta.title.strip() if meta.title else None)
    paragraphs = (line.strip() for line in text.split("\n"))
    return Page(
        text="\n\n".join(p for p in paragraphs if p),
        title=title or None,
        site=m.get("og:site_name") or m.get("application-name") or None,
        authors=tuple(a.strip() for a in re.split(r"[;,]| and ", author) if a.strip()) if author else (),
        date=_stated_date(date),
    )


# ------------------------------------------------------------------------------------------ writing


def file_name(url: str) -> str:
    """A stable, safe file name for an article URL: a slug of its path and a short hash of the URL."""
    parts = urlsplit(url)
    words = [w for w in re.split(r"[^a-z0-9]+", parts.path.lower()) if w and w not in ("html", "htm", "php")]
    slug = "-".join(words)[-60:].strip("-") or re.sub(r"[^a-z0-9]+", "-", (parts.hostname or "")).strip("-")
    return f"{slug or 'article'}-{hashlib.sha256(url.encode()).hexdigest()[:10]}.md"


def write_atomic(path: Path, text: str) -> None:
    """path holds text in full, or is unchanged: a hidden temporary file beside it, synced, then renamed."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def article_markdown(fields: dict, text: str) -> str:
    front = {k: v for k, v in fields.items() if v not in (None, "", ())}
    if "authors" in front:
        front["authors"] = list(front["authors"])
    dumped = yaml.safe_dump(front, allow_unicode=True, sort_keys=False, width=1_000_000)
    return f"---\n{dumped}---\n\n{text}\n"


# ------------------------------------------------------------------------------------------ fetching


def _client(settings: Settings, client: HttpClient | None) -> HttpClient:
    return client or HttpClient.from_settings(settings)


def add_feed(settings: Settings, url: str, name: str | None = None, *, client: HttpClient | None = None):
    """Check that url is a feed (fetched once) and add it under name (or one from its host)."""
    url = url.strip()
    name = name or registry.name_from_url(url)
    path = registry.registry_path(settings.index_path)
    with registry.connect(path) as conn:  # a taken name says so before any request
        registry.check_free(conn, name, url)
    client = _client(settings, client)
    try:
        response = client.get(url)
        parsed = parse_feed(response.body, response.headers.get("Content-Type", ""), response.url)
    except FetchError as exc:
        raise registry.FeedsError(str(exc)) from None
    except registry.FeedsError as exc:
        raise registry.FeedsError(f"{url}: {exc}") from None
    with registry.connect(path) as conn:
        return registry.add(conn, name, url, parsed.title)


def list_feeds(settings: Settings) -> list[tuple[registry.Feed, int]]:
    """Every feed with the number of articles written from it; listing creates no registry."""
    path = registry.registry_path(settings.index_path)
    if not path.exists():
        return []
    with registry.connect(path) as conn:
        return [(feed, registry.entry_count(conn, feed.name)) for feed in registry.feeds(conn)]


def remove_feed(settings: Settings, name: str) -> registry.Feed:
    """Stop fetching the feed name; its articles already written stay in the corpus."""
    with registry.connect(registry.registry_path(settings.index_path)) as conn:
        return registry.remove(conn, name)


def _newest_first(entries: list[Entry]) -> list[Entry]:
    """Dated entries newest first, then the undated in the feed's order (feeds list newest first)."""

    def when(entry: Entry) -> float:
        try:
            moment = dt.datetime.fromisoformat(entry.date) if entry.date else None
        except ValueError:
            moment = None
        if moment is None:
            return float("-inf")
        return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()

    return sorted(entries, key=when, reverse=True)


def fetch_feeds(
    settings: Settings,
    name: str | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    client: HttpClient | None = None,
) -> FetchReport:
    """Fetch every feed (or the one named) and write its new entries under corpus/feeds/<name>/."""
    client = _client(settings, client)
    report = FetchReport()
    say = progress or (lambda _line: None)
    path = registry.registry_path(settings.index_path)
    with registry.fetch_lock(path), registry.connect(path) as conn:
        for feed in registry.feeds(conn, name):
            report.feeds += 1
            say(f"{feed.name}: fetching {feed.url}")
            _fetch_one(settings, client, conn, feed, report, say)
            conn.commit()
    return report


def _fetch_one(settings, client: HttpClient, conn, feed: registry.Feed, report: FetchReport, say) -> None:
    try:
        response = client.get(feed.url, etag=feed.etag, last_modified=feed.last_modified)
        if response.not_modified:
            report.unchanged += 1
            return
        parsed = parse_feed(response.body, response.headers.get("Content-Type", ""), response.url)
    except (FetchError, registry.FeedsError) as exc:
        report.failures.append(f"{feed.name}: {exc}")
        report.failed_feeds += 1
        return
    entries, seen = [], set()
    for entry in _newest_first(parsed.entries):  # one per article URL
        if entry.url not in seen:
            seen.add(entry.url)
            entries.append(entry)
    known = registry.known_urls(conn, (e.url for e in entries))
    new = [e for e in entries if e.url not in known]
    limit = settings.feeds_max_new_per_fetch
    report.left_for_later += max(0, len(new) - limit)
    folder = Path(settings.corpus_dir) / FEEDS_FOLDER / feed.name
    for number, entry in enumerate(new[:limit], 1):
        if number % 10 == 0:
            say(f"{feed.name}: {number} of {min(len(new), limit)} new entries")
        try:
            # A public feed may not lead to private pages, even where private hosts are allowed.
            path, text_from = _write_entry(
                client, settings.corpus_dir, folder, feed, parsed, entry, response.private, report
            )
        except FetchError as exc:
            report.failures.append(f"{feed.name}: {exc}")
            continue
        except OSError as exc:
            report.failures.append(f"{feed.name}: {entry.url}: cannot write the article ({exc.strerror or exc})")
            continue
        rel = path.relative_to(settings.corpus_dir).as_posix()
        registry.record_entry(conn, entry.url, feed.name, rel, text_from)
        conn.commit()  # an interrupted run keeps what it wrote
        report.written.append(rel)
        report.from_feed += text_from == "feed"
    # With entries left for later, the next fetch must see the whole feed again, not a 304.
    complete = len(new) <= limit
    registry.update_feed(
        conn,
        feed.name,
        title=parsed.title,
        etag=response.headers.get("ETag") if complete else None,
        last_modified=response.headers.get("Last-Modified") if complete else None,
    )


def _write_entry(
    client, corpus: Path, folder: Path, feed, parsed: ParsedFeed, entry: Entry, private_feed: bool, report
):
    check_url(entry.url)
    page: Page | None = None
    why = None
    try:
        answer = client.get(entry.url, allow_private=private_feed)
        content_type = answer.headers.get("Content-Type", "")
        if content_type and "html" not in content_type.lower():
            why = f"not an HTML page ({content_type.split(';')[0].strip()})"
        else:
            try:
                page = read_page(answer.body, content_type)
            except Exception as exc:  # hostile markup must not stop the other entries
                logger.warning("cannot read the page %s", entry.url, exc_info=True)
                why = f"the page cannot be read ({type(exc).__name__})"
            else:
                why = None if page else "no article text on the page"
    except RefusedAddressError:
        raise
    except FetchError as exc:
        why = str(exc).split(": ", 1)[-1]
    if page is None:
        if not entry.text:
            raise FetchError(f"{entry.url}: page not used ({why}) and the feed gives no text for it")
        report.notes.append(f"{feed.name}: {entry.url}: page not used ({why}); wrote the feed's own text")
    fields = {
        "title": entry.title or (page.title if page else None),
        "authors": entry.authors or (page.authors if page else ()),
        "date": entry.date or (page.date if page else None),
        "url": entry.url,
        "source": (page.site if page else None) or parsed.title or feed.title,
        "feed": feed.name,
        "text_from": "page" if page else "feed",
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(entry.url)
    if not path.resolve().is_relative_to(Path(corpus).resolve()):  # a folder replaced by a link elsewhere
        raise FetchError(f"{entry.url}: {folder} leads outside the corpus folder; not written")
    write_atomic(path, article_markdown(fields, page.text if page else entry.text))
    return path, fields["text_from"]
