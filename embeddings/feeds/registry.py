"""The feeds and the entries fetched from them, in feeds.sqlite3 beside the index file.

State lives apart from the index: the index can be rebuilt from the corpus at any time, while this
file is what stops an article from being fetched twice. Entries are keyed by their article URL,
never the feed's GUID, which some feeds change on every fetch.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import CorpusBotError

FILE_NAME = "feeds.sqlite3"
NAME_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62})")

# Numbered by position; PRAGMA user_version is how many have run. Append, never edit one that shipped.
MIGRATIONS: list[str] = [
    # 1: feeds and the entries written from them.
    """
    CREATE TABLE feeds (
        name          TEXT PRIMARY KEY,
        url           TEXT NOT NULL UNIQUE,
        title         TEXT,
        etag          TEXT,
        last_modified TEXT,
        added_at      TEXT NOT NULL
    );
    CREATE TABLE entries (
        url        TEXT PRIMARY KEY,          -- the article's URL: GUIDs are not stable everywhere
        feed       TEXT NOT NULL,             -- the feed's name when it was written (kept after removal)
        file       TEXT NOT NULL,             -- corpus-relative path of the written article
        text_from  TEXT NOT NULL CHECK (text_from IN ('page', 'feed')),
        fetched_at TEXT NOT NULL
    );
    """,
]


class FeedsError(CorpusBotError):
    """A feeds command that cannot go ahead: an unknown or taken name, a URL that is not a feed."""


@dataclass(frozen=True)
class Feed:
    name: str
    url: str
    title: str | None
    etag: str | None
    last_modified: str | None
    added_at: str

    def as_dict(self) -> dict:
        return asdict(self)


def registry_path(index_path: Path) -> Path:
    return Path(index_path).parent / FILE_NAME


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """The registry, created and migrated on first use; committed when the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, timeout=30)
    except sqlite3.Error as exc:
        raise FeedsError(f"cannot open the feeds registry {path}: {exc}") from None
    with closing(conn):
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise FeedsError(f"{path} is not a feeds registry ({exc}); move it away") from None
        if version > len(MIGRATIONS):
            raise FeedsError(f"{path} was written by a newer corpus-bot; upgrade corpus-bot")
        for number in range(version, len(MIGRATIONS)):
            with conn:
                for statement in filter(str.strip, MIGRATIONS[number].split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")
        with conn:
            yield conn


@contextmanager
def fetch_lock(path: Path) -> Iterator[None]:
    """One fetch at a time per registry (the bot's and a scheduled one would write the same
    articles twice); flock, so the kernel drops it if the holder dies."""
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FeedsError(f"another feeds fetch is running (it holds {lock_path}); try again when it ends") from None
        yield


def name_from_url(url: str) -> str:
    """A feed name from its host: https://www.example.com/rss -> example-com."""
    host = (urlsplit(url).hostname or "").lower().removeprefix("www.")
    return re.sub(r"[^a-z0-9]+", "-", host).strip("-")[:63].strip("-") or "feed"


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise FeedsError(
            f"feed name {name!r} is not usable: use 1 to 63 lowercase letters, digits and '-', starting with a letter or digit"
        )
    return name


def check_free(conn: sqlite3.Connection, name: str, url: str) -> None:
    """FeedsError when the name or the URL is taken already."""
    check_name(name)
    taken = conn.execute("SELECT name, url FROM feeds WHERE name = ? OR url = ?", (name, url)).fetchone()
    if taken and taken[1] == url:
        raise FeedsError(f"{url} is already added as feed {taken[0]!r}")
    if taken:
        raise FeedsError(f"a feed named {name!r} exists already ({taken[1]}); choose another with --name")


def add(conn: sqlite3.Connection, name: str, url: str, title: str | None) -> Feed:
    check_free(conn, name, url)
    feed = Feed(name, url, title, None, None, _now())
    conn.execute(
        "INSERT INTO feeds (name, url, title, etag, last_modified, added_at) VALUES (?, ?, ?, ?, ?, ?)",
        (feed.name, feed.url, feed.title, feed.etag, feed.last_modified, feed.added_at),
    )
    return feed


def feeds(conn: sqlite3.Connection, name: str | None = None) -> list[Feed]:
    rows = conn.execute(
        "SELECT name, url, title, etag, last_modified, added_at FROM feeds"
        + (" WHERE name = ?" if name is not None else "")
        + " ORDER BY name",
        (name,) if name is not None else (),
    ).fetchall()
    if name is not None and not rows:
        raise FeedsError(f"no feed named {name!r} (see `corpus-bot feeds list`)")
    return [Feed(*row) for row in rows]


def remove(conn: sqlite3.Connection, name: str) -> Feed:
    (feed,) = feeds(conn, name)
    conn.execute("DELETE FROM feeds WHERE name = ?", (name,))
    return feed


def update_feed(conn: sqlite3.Connection, name: str, *, title: str | None, etag: str | None, last_modified: str | None):
    conn.execute(
        "UPDATE feeds SET title = coalesce(?, title), etag = ?, last_modified = ? WHERE name = ?",
        (title, etag, last_modified, name),
    )


def known_urls(conn: sqlite3.Connection, urls: Iterable[str]) -> set[str]:
    known: set[str] = set()
    urls = list(urls)
    for start in range(0, len(urls), 500):  # under SQLite's bound-parameter limit
        part = urls[start : start + 500]
        marks = ",".join("?" * len(part))
        known.update(row[0] for row in conn.execute(f"SELECT url FROM entries WHERE url IN ({marks})", part))
    return known


def record_entry(conn: sqlite3.Connection, url: str, feed: str, file: str, text_from: str) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO entries (url, feed, file, text_from, fetched_at) VALUES (?, ?, ?, ?, ?)",
        (url, feed, file, text_from, _now()),
    )


def entry_count(conn: sqlite3.Connection, feed: str) -> int:
    return conn.execute("SELECT count(*) FROM entries WHERE feed = ?", (feed,)).fetchone()[0]
