"""The answer model: what a search returns, shared by the CLI and the bot.

Both render these objects; neither computes its own labels. `Answer.to_json()` is the documented
`corpus-bot ask --json` shape and must stay stable.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

UNDATED = "undated"


@dataclass(frozen=True)
class Article:
    id: int
    key: str  # corpus-relative path ('#N' for JSON records)
    title: str | None
    source: str | None
    authors: tuple[str, ...]
    published: dt.date | None
    updated: dt.date | None
    url: str | None
    passages: int

    @property
    def display_title(self) -> str:
        return self.title or self.key

    @property
    def date_label(self) -> str:
        return format_date(self.published) if self.published else UNDATED

    @property
    def byline(self) -> str:
        """'Publication · By A and B · Aug 9, 2021' with the parts that are known."""
        parts = [self.source] if self.source else []
        if self.authors:
            parts.append("By " + join_names(self.authors))
        parts.append(self.date_label)
        return " · ".join(parts)

    def to_json(self) -> dict:
        return {
            "path": self.key,
            "title": self.title,
            "source": self.source,
            "authors": list(self.authors),
            "published": self.published.isoformat() if self.published else None,
            "updated": self.updated.isoformat() if self.updated else None,
            "url": self.url,
            "passages": self.passages,
        }


@dataclass(frozen=True)
class Result:
    rank: int
    score: float  # cosine similarity of question and passage
    passage_id: int
    position: int  # 0-based
    text: str  # verbatim passage text
    article: Article
    highlight: tuple[int, int] | None = None  # span of the sentence that best matches the question
    weak: bool = False
    also_in: tuple[Article, ...] = ()  # other articles carrying a near-copy of this passage
    # The score the results are ordered by: the ranking's (cosine plus keyword evidence in hybrid
    # mode), less the penalty for an article's later passages; never higher than the one above.
    relevance: float = 0.0

    @property
    def also_in_label(self) -> str | None:
        """'also in: Publication (date), Other title (undated)' for syndicated copies, else None."""
        if not self.also_in:
            return None
        return "also in: " + ", ".join(f"{a.source or a.display_title} ({a.date_label})" for a in self.also_in)

    @property
    def position_label(self) -> str:
        return f"paragraph {self.position + 1} of {self.article.passages}"

    @property
    def relevance_label(self) -> str:
        return f"{self.relevance:.2f}" + (" (weak match)" if self.weak else "")

    def to_json(self) -> dict:
        a = self.article
        return {
            "rank": self.rank,
            "score": round(self.score, 4),
            "relevance": round(self.relevance, 4),
            "weak": self.weak,
            "text": self.text,
            "title": a.title,
            "source": a.source,
            "authors": list(a.authors),
            "date": a.published.isoformat() if a.published else None,
            "path": a.key,
            "position": self.position + 1,
            "article_passages": a.passages,
            "highlight": self.text[self.highlight[0] : self.highlight[1]] if self.highlight else None,
            "also_in": [
                {
                    "path": o.key,
                    "title": o.title,
                    "source": o.source,
                    "date": o.published.isoformat() if o.published else None,
                }
                for o in self.also_in
            ],
        }


@dataclass(frozen=True)
class Answer:
    query: str
    results: list[Result]
    weak: bool
    excluded_undated: int = 0
    offset: int = 0  # how many better results came before this page
    has_more: bool = False
    filters: dict = field(default_factory=dict)

    @property
    def notices(self) -> list[str]:
        """Plain-language notes every renderer shows above the results."""
        out = []
        if not self.results:
            out.append(
                "Nothing in the corpus matches this question" + (" with these filters." if self.filters else ".")
            )
        elif self.weak:
            out.append(
                "Nothing in the corpus answers this question well; these are the closest passages, marked as weak."
            )
        if self.excluded_undated:
            n = self.excluded_undated
            out.append(f"{n} undated article{'s' if n != 1 else ''} left out by the date filter.")
        return out

    def to_json(self) -> dict:
        return {
            "query": self.query,
            "results": [r.to_json() for r in self.results],
            "weak": self.weak,
            "excluded_undated": self.excluded_undated,
            "offset": self.offset,
            "has_more": self.has_more,
        }


def format_date(date: dt.date) -> str:
    return f"{date:%b} {date.day}, {date.year}"


def join_names(names: tuple[str, ...] | list[str]) -> str:
    names = list(names)
    if len(names) <= 2:
        return " and ".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]
