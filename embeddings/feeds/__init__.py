"""News feeds (RSS 2.0, Atom, JSON Feed) that keep the corpus folder current.

registry: the feeds and what was fetched from them (feeds.sqlite3 beside the index file);
http: the one HTTP client for feeds, article pages and robots.txt (public hosts only, robots.txt,
per-host rate limit, size and time limits); fetch: new entries written as .md articles under
corpus/feeds/<name>/ for the next index run. Nothing here indexes.
"""

from .fetch import FetchReport, add_feed, fetch_feeds, list_feeds, remove_feed

__all__ = ["FetchReport", "add_feed", "fetch_feeds", "list_feeds", "remove_feed"]
