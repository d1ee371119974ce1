"""News feeds: fetching RSS, Atom and JSON Feed from a local HTTP server into corpus/feeds/.

Every URL here is on 127.0.0.1 (or 127.0.0.2, loopback too, for the address rules): nothing leaves
the machine. Private hosts are allowed (FEEDS_ALLOW_PRIVATE_HOSTS) except where the rule is tested.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from embeddings.cli import cli
from embeddings.config import Settings
from embeddings.errors import ConfigError
from embeddings.feeds import fetch as feeds_fetch
from embeddings.feeds import fetch_feeds, registry
from embeddings.feeds import http as feeds_http
from embeddings.parse import parse_file

# ---------------------------------------------------------------------------------------- settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    env = {
        "CORPUS_DIR": str(tmp_path / "corpus"),
        "INDEX_PATH": str(tmp_path / "data" / "index.sqlite3"),
        "FEEDS_ALLOW_PRIVATE_HOSTS": "1",
        "FEEDS_HOST_INTERVAL_SECONDS": "0",
        "FEEDS_TIMEOUT_SECONDS": "0.5",
        "FEEDS_MAX_MB": "1",
    }
    return Settings.from_env(env, dotenv=False)


def add(settings: Settings, name: str, url: str, title: str | None = None) -> None:
    """A feed in the registry as `feeds add` leaves it (without fetching it first)."""
    with registry.connect(registry.registry_path(settings.index_path)) as conn:
        registry.add(conn, name, url, title)


XML = {"Content-Type": "application/xml; charset=utf-8"}
HTML = {"Content-Type": "text/html; charset=utf-8"}


def rss(title: str, items: list[dict]) -> bytes:
    parts = []
    for it in items:
        parts.append(
            "<item>"
            + f"<title>{it['title']}</title><link>{it['link']}</link><guid>{it.get('guid', it['link'])}</guid>"
            + (f"<pubDate>{it['date']}</pubDate>" if it.get("date") else "")
            + (f"<author>{it['author']}</author>" if it.get("author") else "")
            + (f"<description><![CDATA[{it['summary']}]]></description>" if it.get("summary") else "")
            + "</item>"
        )
    return (
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
        f"<title>{title}</title><link>http://127.0.0.1/</link><description>d</description>{''.join(parts)}"
        "</channel></rss>"
    ).encode()


def page(title: str, paragraphs: list[str], meta: dict[str, str] | None = None) -> bytes:
    metas = "".join(f'<meta property="{k}" content="{v}">' for k, v in (meta or {}).items())
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        f"<html><head><title>{title}</title>{metas}</head><body><nav><a href='/'>Home</a></nav>"
        f"<article><h1>{title}</h1>{body}</article><footer>Copyright</footer></body></html>"
    ).encode()


TEXT = [
    "The harbour authority approved the new breakwater on Tuesday after two years of public hearings.",
    "Engineers said the structure would protect the fishing fleet from the winter storms that have "
    "damaged the old pier three times in the past decade.",
    "Construction is expected to begin in the spring and to last eighteen months, the authority said.",
]


def read_article(settings: Settings, rel: str):
    """The written file as the index job reads it (embeddings/parse.py), and its front matter."""
    data = (settings.corpus_dir / rel).read_bytes()
    (doc,) = parse_file(rel, data)
    front = yaml.safe_load(data.decode().split("---\n")[1])
    return doc, front


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp")


# ---------------------------------------------------------------------------------------- formats


def test_rss_atom_and_json_feeds_are_written_as_articles_the_index_reads_with_their_metadata(server, settings):
    server.routes["/a1"] = (200, HTML, page("Breakwater approved", TEXT, {"og:site_name": "Harbour Daily"}))
    server.routes["/a2"] = (200, HTML, page("Atom story", TEXT))
    server.routes["/a3"] = (200, HTML, page("Json story", TEXT))
    server.routes["/rss"] = (
        200,
        XML,
        rss(
            "The Coast Gazette",
            [
                {
                    "title": "Breakwater approved",
                    "link": server.url("/a1"),
                    "date": "Tue, 07 May 2024 10:00:00 +0200",
                    "author": "jane@example.com (Jane Roe)",
                }
            ],
        ),
    )
    server.routes["/atom"] = (
        200,
        {"Content-Type": "application/atom+xml"},
        (
            "<?xml version='1.0'?><feed xmlns='http://www.w3.org/2005/Atom'><title>Atom Times</title>"
            "<id>urn:x</id><updated>2024-05-01T00:00:00Z</updated>"
            f"<entry><title>Atom story</title><link href='{server.url('/a2')}'/><id>urn:1</id>"
            "<published>2024-04-30T08:30:00Z</published><updated>2024-05-01T00:00:00Z</updated>"
            "<author><name>John Doe</name></author><author><name>Ann Lee</name></author></entry></feed>"
        ).encode(),
    )
    server.routes["/json"] = (
        200,
        {"Content-Type": "application/feed+json"},
        json.dumps(
            {
                "version": "https://jsonfeed.org/version/1.1",
                "title": "Json Post",
                "items": [
                    {
                        "id": "1",
                        "url": server.url("/a3"),
                        "title": "Json story",
                        "date_published": "2024-03-02T22:00:00-05:00",
                        "authors": [{"name": "Max Mustermann"}],
                    }
                ],
            }
        ).encode(),
    )
    add(settings, "rss", server.url("/rss"))
    add(settings, "atom", server.url("/atom"))
    add(settings, "json", server.url("/json"))

    report = fetch_feeds(settings)

    assert report.failures == [] and report.notes == []
    assert len(report.written) == 3 and report.from_feed == 0
    docs = {rel.split("/")[1]: read_article(settings, rel) for rel in report.written}
    assert all(rel.startswith("feeds/") and rel.endswith(".md") for rel in report.written)

    doc, front = docs["rss"]
    assert doc.title == "Breakwater approved"
    assert doc.source == "Harbour Daily"  # the page names its site
    assert doc.published == dt.date(2024, 5, 7)
    assert doc.url == server.url("/a1")
    assert doc.authors == ("Jane Roe",)  # the name of RSS's "email (name)"
    assert front["text_from"] == "page"
    assert any("breakwater" in p for p in doc.paragraphs)

    doc, _ = docs["atom"]
    assert (doc.title, doc.source, doc.authors) == ("Atom story", "Atom Times", ("John Doe", "Ann Lee"))
    assert doc.published == dt.date(2024, 4, 30)  # published, not updated

    doc, _ = docs["json"]
    assert (doc.title, doc.source, doc.authors) == ("Json story", "Json Post", ("Max Mustermann",))
    assert doc.published == dt.date(2024, 3, 2)  # the feed's own day, not shifted to UTC's


def test_the_index_job_indexes_fetched_articles_with_their_metadata(server, settings, fake_embedder):
    from embeddings import store
    from embeddings.index import run_index

    server.routes["/p"] = (200, HTML, page("Breakwater approved", TEXT))
    server.routes["/rss"] = (
        200,
        XML,
        rss(
            "The Coast Gazette",
            [
                {"title": "Breakwater approved", "link": server.url("/p"), "date": "Tue, 07 May 2024 10:00:00 +0200"},
                {"title": "From the feed", "link": server.url("/gone"), "summary": "<p>Only the summary.</p>"},
            ],
        ),
    )
    add(settings, "coast", server.url("/rss"))
    fetch_feeds(settings)

    run_index(replace(settings, embedding_model=fake_embedder.name))

    with store.reading(settings.index_path) as conn:
        articles = {a.title: a for a in store.read_articles(conn)}
    assert set(articles) == {"Breakwater approved", "From the feed"}
    article = articles["Breakwater approved"]
    assert (article.source, article.published, article.url) == (
        "The Coast Gazette",
        dt.date(2024, 5, 7),
        server.url("/p"),
    )
    assert article.key.startswith("feeds/coast/") and article.passages >= 1
    assert articles["From the feed"].published is None


def test_an_entry_without_a_date_stays_undated(server, settings):
    server.routes["/p"] = (200, HTML, page("Undated", TEXT))
    server.routes["/rss"] = (200, XML, rss("Feed", [{"title": "Undated", "link": server.url("/p")}]))
    add(settings, "f", server.url("/rss"))

    (rel,) = fetch_feeds(settings).written

    doc, front = read_article(settings, rel)
    assert "date" not in front and doc.published is None and doc.updated is None


def test_the_page_date_is_used_only_when_the_page_states_it(server, settings):
    server.routes["/p"] = (200, HTML, page("Dated page", TEXT, {"article:published_time": "2023-11-05T09:00:00Z"}))
    server.routes["/rss"] = (200, XML, rss("Feed", [{"title": "Dated page", "link": server.url("/p")}]))
    add(settings, "f", server.url("/rss"))

    (rel,) = fetch_feeds(settings).written

    assert read_article(settings, rel)[0].published == dt.date(2023, 11, 5)


# ---------------------------------------------------------------------------------------- pages that fail


def _one_entry_feed(server, settings, path: str, summary: str = "<p>The feed's <b>own</b> summary.</p>"):
    server.routes["/rss"] = (
        200,
        XML,
        rss("Feed", [{"title": "Story", "link": server.url(path), "summary": summary, "date": "Mon, 06 May 2024"}]),
    )
    add(settings, "f", server.url("/rss"))


@pytest.mark.parametrize(
    ("route", "why"),
    [
        ((404, HTML, b"gone"), "HTTP 404"),
        (lambda h: (time.sleep(1.2), (200, HTML, page("Slow", TEXT)))[1], "timed out"),
        ((200, HTML, b"<p>" + b"x" * (1024 * 1024 + 10) + b"</p>"), "larger than 1 MB"),
    ],
    ids=["404", "slow", "too-large"],
)
def test_a_page_that_cannot_be_used_falls_back_to_the_feeds_summary_marked_so(server, settings, route, why):
    server.routes["/p"] = route
    _one_entry_feed(server, settings, "/p")

    report = fetch_feeds(settings)

    assert report.failures == []
    (note,) = report.notes
    assert why in note and server.url("/p") in note and "\n" not in note
    (rel,) = report.written
    doc, front = read_article(settings, rel)
    assert front["text_from"] == "feed" and report.from_feed == 1
    assert doc.paragraphs == ("The feed's own summary.",)
    assert doc.published == dt.date(2024, 5, 6)
    assert leftovers(settings.corpus_dir) == []


def test_a_page_that_fails_without_a_feed_summary_is_one_failure_and_not_recorded(server, settings):
    server.routes["/rss"] = (200, XML, rss("Feed", [{"title": "Gone", "link": server.url("/gone")}]))
    add(settings, "f", server.url("/rss"))

    report = fetch_feeds(settings)

    (line,) = report.failures
    assert "HTTP 404" in line and server.url("/gone") in line
    assert report.written == []


def test_a_redirect_loop_is_one_line(server, settings):
    server.routes["/loop-a"] = (302, {"Location": "/loop-b"}, b"")
    server.routes["/loop-b"] = (302, {"Location": server.url("/loop-a")}, b"")
    _one_entry_feed(server, settings, "/loop-a")

    (note,) = fetch_feeds(settings).notes

    assert "redirect loop" in note
    assert server.paths().count("/loop-a") == 1  # given up at once, not after the redirect limit


def test_a_redirect_chain_longer_than_the_limit_is_one_line(server):
    for i in range(8):
        server.routes[f"/r{i}"] = (301, {"Location": f"/r{i + 1}"}, b"")
    server.routes["/r8"] = (200, HTML, b"end")
    client = feeds_http.HttpClient(allow_private=True, timeout=1, host_interval=0, max_redirects=5)

    with pytest.raises(feeds_http.FetchError, match=r"/r0: too many redirects \(more than 5\)$"):
        client.get(server.url("/r0"))
    assert client.get(server.url("/r4")).body == b"end"  # four hops are within the limit


def test_relative_links_non_utf8_pages_and_pages_that_are_not_html(server, settings):
    server.routes["/news/latin"] = (
        200,
        {"Content-Type": "text/html; charset=iso-8859-1"},
        page("Caf\u00e9", [t.replace("harbour", "caf\u00e9") for t in TEXT]).decode().encode("latin-1"),
    )
    server.routes["/news/doc.pdf"] = (200, {"Content-Type": "application/pdf"}, b"%PDF-1.4")
    server.routes["/news/rss"] = (
        200,
        XML,
        rss("Feed", [{"title": "Latin", "link": "latin"}, {"title": "Pdf", "link": "/news/doc.pdf", "summary": "s"}]),
    )
    add(settings, "f", server.url("/news/rss"))

    report = fetch_feeds(settings)

    assert report.failures == []
    (note,) = report.notes
    assert "not an HTML page (application/pdf)" in note
    texts = {read_article(settings, rel)[0].url: read_article(settings, rel)[0] for rel in report.written}
    assert any("caf\u00e9" in p for p in texts[server.url("/news/latin")].paragraphs)
    assert set(texts) == {server.url("/news/latin"), server.url("/news/doc.pdf")}


def test_https_is_checked_and_a_failed_handshake_is_one_line(server):
    client = feeds_http.HttpClient(allow_private=True, timeout=1, host_interval=0)

    with pytest.raises(feeds_http.FetchError, match=r"^https://127\.0\.0\.1:\d+/x: TLS failed"):
        client.get(f"https://127.0.0.1:{server.port}/x", robots=False)  # a plain-HTTP server


def test_compressed_answers_are_read_and_bounded_after_decompression(server):
    import gzip

    server.routes["/small"] = (200, {"Content-Encoding": "gzip"}, gzip.compress(b"hello"))
    server.routes["/bomb"] = (200, {"Content-Encoding": "gzip"}, gzip.compress(b"0" * (2 * 1024 * 1024)))
    client = feeds_http.HttpClient(allow_private=True, timeout=1, host_interval=0, max_bytes=1024 * 1024)

    assert client.get(server.url("/small")).body == b"hello"
    with pytest.raises(feeds_http.FetchError, match="larger than 1 MB"):
        client.get(server.url("/bomb"))  # a few kilobytes on the wire


def test_robots_txt_that_disallows_the_pages_is_obeyed(server, settings):
    server.routes["/robots.txt"] = (200, {"Content-Type": "text/plain"}, b"User-agent: *\nDisallow: /news/\n")
    server.routes["/news/p"] = (200, HTML, page("Story", TEXT))
    _one_entry_feed(server, settings, "/news/p")

    report = fetch_feeds(settings)

    assert "/news/p" not in server.paths()
    assert server.paths().count("/robots.txt") == 1  # once per host and run
    (note,) = report.notes
    assert "robots.txt" in note
    assert report.from_feed == 1


def test_requests_name_corpus_bot_and_are_spaced_per_host(server):
    server.routes["/x"] = (200, HTML, b"x")
    client = feeds_http.HttpClient(allow_private=True, timeout=1, host_interval=0.3)

    client.get(server.url("/x"))
    client.get(server.url("/x"))

    times = [t for p, _h, t in server.requests if p == "/x"]
    assert times[1] - times[0] >= 0.25
    assert all(h["User-Agent"].startswith("corpus-bot/") for _p, h, _t in server.requests)


# ---------------------------------------------------------------------------------------- feeds that fail


def test_bad_feeds_are_one_line_each_and_the_other_feeds_are_still_fetched(server, settings):
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        server.routes["/p"] = (200, HTML, page("Good", TEXT))
        server.routes["/good"] = (200, XML, rss("Good", [{"title": "Good", "link": server.url("/p")}]))
        server.routes["/broken"] = (
            200,
            XML,
            b"<?xml version='1.0'?><rss version='2.0'><channel><title>B</title><item><ti",
        )
        server.routes["/html"] = (200, HTML, b"<html><body><p>Just a page.</p></body></html>")
        add(settings, "a-malformed", server.url("/broken"))
        add(settings, "b-not-a-feed", server.url("/html"))
        add(settings, "c-invalid", "ftp://127.0.0.1/feed")
        add(settings, "d-silent", f"http://127.0.0.1:{silent.getsockname()[1]}/feed")
        add(settings, "e-missing", server.url("/nothing"))
        add(settings, "f-good", server.url("/good"))

        started = time.monotonic()
        report = fetch_feeds(settings)
        elapsed = time.monotonic() - started
    finally:
        silent.close()

    assert len(report.written) == 1 and report.written[0].startswith("feeds/f-good/")
    lines = dict(line.split(": ", 1) for line in report.failures)
    assert sorted(lines) == ["a-malformed", "b-not-a-feed", "c-invalid", "d-silent", "e-missing"]
    assert "malformed feed" in lines["a-malformed"]
    assert "not a feed" in lines["b-not-a-feed"]
    assert "invalid URL" in lines["c-invalid"]
    assert "timed out" in lines["d-silent"]
    assert "HTTP 404" in lines["e-missing"]
    assert all("\n" not in line for line in report.failures)
    assert report.failed_feeds == 5
    assert elapsed < 5  # the silent host costs one timeout, not one per request


def test_a_feed_of_10000_entries_is_fetched_a_bounded_number_at_a_time_newest_first(server, settings):
    settings = replace(settings, feeds_max_new_per_fetch=5, feeds_max_bytes=10 * 1024 * 1024)
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    items = [  # oldest first, as some feeds list them
        {
            "title": f"Item {i}",
            "link": server.url(f"/a/{i}"),
            "date": (base + dt.timedelta(minutes=i)).strftime("%a, %d %b %Y %H:%M:%S +0000"),
        }
        for i in range(10_000)
    ]
    body = rss("Big", items)
    server.routes["/big"] = lambda h: (
        (304, {}, b"") if h.headers.get("If-None-Match") == '"v1"' else (200, {**XML, "ETag": '"v1"'}, body)
    )
    for i in range(9990, 10_000):
        server.routes[f"/a/{i}"] = (200, HTML, page(f"Item {i}", TEXT))
    add(settings, "big", server.url("/big"))

    first = fetch_feeds(settings)
    second = fetch_feeds(settings)

    assert first.left_for_later == 9995 and second.left_for_later == 9990
    fetched = [p for p in server.paths() if p.startswith("/a/")]
    assert fetched == [f"/a/{i}" for i in range(9999, 9989, -1)]  # newest first, none twice
    assert len(first.written) == len(second.written) == 5 and second.unchanged == 0


def test_entries_are_keyed_by_url_so_a_feed_that_changes_every_guid_is_not_fetched_twice(server, settings):
    server.routes["/p1"] = (200, HTML, page("One", TEXT))
    server.routes["/p2"] = (200, HTML, page("Two", TEXT))
    fetches = iter(range(1_000))
    server.routes["/rss"] = lambda h: (
        200,
        XML,
        rss(
            "Feed",
            [
                {"title": t, "link": server.url(p), "guid": f"{p}-{next(fetches)}"}
                for t, p in (("One", "/p1"), ("Two", "/p2"))
            ],
        ),
    )
    add(settings, "f", server.url("/rss"))

    first = fetch_feeds(settings)
    second = fetch_feeds(settings)

    assert len(first.written) == 2 and second.written == [] and second.failures == []
    assert server.paths().count("/p1") == server.paths().count("/p2") == 1


@pytest.mark.parametrize("validator", ["ETag", "Last-Modified"])
def test_a_feed_that_answers_not_modified_fetches_nothing(server, settings, validator):
    value = '"abc"' if validator == "ETag" else "Mon, 06 May 2024 10:00:00 GMT"
    asked = "If-None-Match" if validator == "ETag" else "If-Modified-Since"
    server.routes["/p"] = (200, HTML, page("One", TEXT))
    body = rss("Feed", [{"title": "One", "link": server.url("/p")}])
    server.routes["/rss"] = lambda h: (
        (304, {}, b"") if h.headers.get(asked) == value else (200, {**XML, validator: value}, body)
    )
    add(settings, "f", server.url("/rss"))

    first = fetch_feeds(settings)
    requests_before = len(server.requests)
    second = fetch_feeds(settings)

    assert len(first.written) == 1
    assert (second.unchanged, second.written, second.failures) == (1, [], [])
    assert [p for p in server.paths()[requests_before:] if p != "/robots.txt"] == ["/rss"]


# ---------------------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("100.64.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("93.184.216.34", None),
        ("2606:4700::1111", None),
    ],
)
def test_only_public_addresses_count_as_public(address, kind):
    assert feeds_http.address_kind(address) == kind


def test_a_loopback_feed_is_refused_unless_private_hosts_are_allowed(server, settings):
    server.routes["/rss"] = (200, XML, rss("Feed", []))
    add(settings, "f", server.url("/rss"))

    report = fetch_feeds(replace(settings, feeds_allow_private_hosts=False))

    (line,) = report.failures
    assert "refused" in line and "loopback" in line and "FEEDS_ALLOW_PRIVATE_HOSTS" in line
    assert server.requests == []


def test_a_name_that_resolves_to_a_private_address_is_refused(server, monkeypatch):
    monkeypatch.setattr(feeds_http, "resolve", lambda host, port: ["10.0.0.7"] if host == "news.example" else [])
    client = feeds_http.HttpClient(allow_private=False, timeout=0.5)

    with pytest.raises(feeds_http.RefusedAddressError, match=r"news\.example is a private address"):
        client.get("http://news.example/feed")


def test_a_public_feed_may_not_lead_to_loopback_pages_directly_or_by_redirect(server, settings, monkeypatch):
    """127.0.0.1 plays a public host here; 127.0.0.2 (loopback) the private page it links to."""
    real_kind = feeds_http.address_kind
    monkeypatch.setattr(feeds_http, "address_kind", lambda a: None if a == "127.0.0.1" else real_kind(a))
    private_page = f"http://127.0.0.2:{server.port}/private"
    server.routes["/hop"] = (302, {"Location": private_page}, b"")
    server.routes["/public"] = (200, HTML, page("Public", TEXT))
    server.routes["/rss"] = (
        200,
        XML,
        rss(
            "Feed",
            [
                {"title": "Direct", "link": private_page, "summary": "s"},
                {"title": "Hop", "link": server.url("/hop"), "summary": "s"},
                {"title": "Public", "link": server.url("/public")},
            ],
        ),
    )
    add(settings, "f", server.url("/rss"))

    report = fetch_feeds(settings)  # FEEDS_ALLOW_PRIVATE_HOSTS=1, yet the feed is public

    assert len(report.failures) == 2
    assert all("refused" in line and "127.0.0.2" in line for line in report.failures)
    assert [p for p in server.paths() if p not in ("/rss", "/robots.txt")] == ["/hop", "/public"]
    (rel,) = report.written
    assert read_article(settings, rel)[0].title == "Public"


# ---------------------------------------------------------------------------------------- files


def test_file_names_are_stable_safe_and_distinct():
    a = feeds_fetch.file_name("http://x.example/../../etc/passwd")
    b = feeds_fetch.file_name("http://x.example/2024/05/Breakwater-Approved.html?id=1")
    assert a == feeds_fetch.file_name("http://x.example/../../etc/passwd")
    assert "/" not in a and not a.startswith(".") and a.endswith(".md")
    assert b.startswith("2024-05-breakwater-approved-")
    assert b != feeds_fetch.file_name("http://x.example/2024/05/Breakwater-Approved.html?id=2")


def test_a_failed_write_leaves_no_partial_or_temporary_file(server, settings, monkeypatch):
    server.routes["/p1"] = (200, HTML, page("One", TEXT))
    server.routes["/p2"] = (200, HTML, page("Two", TEXT))
    server.routes["/rss"] = (
        200,
        XML,
        rss("Feed", [{"title": "One", "link": server.url("/p1")}, {"title": "Two", "link": server.url("/p2")}]),
    )
    add(settings, "f", server.url("/rss"))
    real_fsync, calls = os.fsync, []

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(feeds_fetch.os, "fsync", failing_fsync)

    report = fetch_feeds(settings)

    (line,) = report.failures
    assert "No space left on device" in line
    folder = settings.corpus_dir / "feeds" / "f"
    assert leftovers(folder) == []
    assert [p.name for p in folder.iterdir()] == [Path(report.written[0]).name]
    monkeypatch.setattr(feeds_fetch.os, "fsync", real_fsync)
    assert len(fetch_feeds(settings).written) == 1  # the failed entry is tried again


def test_a_written_article_is_never_outside_its_feed_folder(server, settings):
    server.routes["/rss"] = (
        200,
        XML,
        rss("Feed", [{"title": "T", "link": server.url("/%2e%2e/%2e%2e/x"), "summary": "s"}]),
    )
    add(settings, "f", server.url("/rss"))

    (rel,) = fetch_feeds(settings).written

    assert Path(rel).parent == Path("feeds/f")


def test_one_fetch_at_a_time(server, settings):
    add(settings, "f", server.url("/rss"))

    with (
        registry.fetch_lock(registry.registry_path(settings.index_path)),
        pytest.raises(registry.FeedsError, match="another feeds fetch is running"),
    ):
        fetch_feeds(settings)
    assert server.requests == []
    assert fetch_feeds(settings).failed_feeds == 1  # the lock is gone with its holder (the feed is a 404)


# ---------------------------------------------------------------------------------------- names


def test_names_come_from_the_host_and_must_be_simple():
    assert registry.name_from_url("https://www.Example.com/rss.xml") == "example-com"
    for bad in ("Bad Name", "../x", "-x", ""):
        with pytest.raises(registry.FeedsError, match="not usable"):
            registry.check_name(bad)


def test_feed_settings_are_read_from_the_environment_and_checked():
    settings = Settings.from_env({}, dotenv=False)
    assert (settings.feeds_allow_private_hosts, settings.feeds_max_new_per_fetch) == (False, 100)
    assert (settings.feeds_host_interval_seconds, settings.feeds_max_bytes) == (1.0, 5 * 1024 * 1024)
    env = {"FEEDS_ALLOW_PRIVATE_HOSTS": "yes", "FEEDS_MAX_NEW_PER_FETCH": "7", "FEEDS_TIMEOUT_SECONDS": "2.5"}
    settings = Settings.from_env(env, dotenv=False)
    assert (settings.feeds_allow_private_hosts, settings.feeds_max_new_per_fetch) == (True, 7)
    assert settings.feeds_timeout_seconds == 2.5
    with pytest.raises(ConfigError, match=r"FEEDS_ALLOW_PRIVATE_HOSTS must be 1 \(on\) or 0 \(off\)"):
        Settings.from_env({"FEEDS_ALLOW_PRIVATE_HOSTS": "maybe"}, dotenv=False)


# ---------------------------------------------------------------------------------------- CLI


def test_the_feeds_commands(server, settings):
    server.routes["/rss"] = (
        200,
        XML,
        rss("Coast \x1b]0;pwned\x07Gazette", [{"title": "One", "link": server.url("/p")}]),
    )
    server.routes["/p"] = (200, HTML, page("One", TEXT))
    server.routes["/html"] = (200, HTML, b"<html><body>no feed</body></html>")
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli, list(args), obj=settings)

    assert run("feeds", "list").output == "no feeds: add one with `corpus-bot feeds add URL`\n"
    assert not registry.registry_path(settings.index_path).exists()
    added = run("feeds", "add", server.url("/rss"))
    assert added.exit_code == 0, added.output
    assert "added feed 127-0-0-1" in added.output and "\x1b" not in added.output

    for args, message in [
        (("feeds", "add", server.url("/rss"), "--name", "other"), "is already added as feed '127-0-0-1'"),
        (("feeds", "add", server.url("/html"), "--name", "other"), "not a feed"),
        (("feeds", "add", server.url("/rss"), "--name", "Bad Name"), "not usable"),
        (("feeds", "add", "not a url", "--name", "x"), "invalid URL"),
        (("feeds", "remove", "nope"), "no feed named 'nope'"),
    ]:
        result = run(*args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
        assert result.output.count("\n") == 1 and result.output.startswith("Error: ")

    listed = run("feeds", "list", "--json")
    (feed,) = json.loads(listed.output)["feeds"]
    assert (feed["name"], feed["url"], feed["articles"]) == ("127-0-0-1", server.url("/rss"), 0)
    assert feed["title"] == "Coast \x1b]0;pwned\x07Gazette"  # JSON keeps the text, escaped
    assert "\x1b" not in run("feeds", "list").output

    fetched = run("feeds", "fetch", "--json")
    assert fetched.exit_code == 0
    report = json.loads(fetched.stdout)
    assert len(report["written"]) == 1 and report["failures"] == [] and report["feeds"] == 1
    assert json.loads(run("feeds", "list", "--json").output)["feeds"][0]["articles"] == 1
    assert not settings.index_path.exists()  # fetching writes the corpus; `corpus-bot index` indexes

    again = run("feeds", "fetch")
    assert again.exit_code == 0
    assert (
        "1 feed fetched (0 unchanged): 0 new articles written (0 from the feed's own text), 0 failures" in again.output
    )
    removed = run("feeds", "remove", "127-0-0-1")
    assert removed.exit_code == 0 and "stay in" in removed.output
    assert (settings.corpus_dir / report["written"][0]).exists()
    assert json.loads(run("feeds", "list", "--json").output) == {"feeds": []}
    assert run("feeds", "fetch").output == "no feeds: add one with `corpus-bot feeds add URL`\n"
    assert run("feeds", "fetch", "nope").output.startswith("Error: no feed named 'nope'")
