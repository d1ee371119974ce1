"""Dates written in articles and in their metadata, read strictly.

A date is read only when its day, month and four-digit year are all written, and an impossible
date (Feb. 30, month 13, 25:00) is rejected rather than corrected: a wrong date in an answer is
worse than no date. Nothing is ever filled in from "today", and relative dates ("yesterday",
"2 days ago") are not dates.

- ISO 8601 (`2021-08-09`, `2021-08-09T10:15:00Z`) is read by the standard library.
- Every other form is read by dateparser, in English, French, German and Spanish, with only its
  absolute-date parser and all three parts required: "Aug. 9, 2021", "Published 3:14 PM EST, Tue
  March 5, 2024", "12. März 2024", "Publié le 4 mars 2024", "5 de marzo de 2024", "05.03.2024".
  dateparser is called only on short texts made of nothing but date words (month and weekday
  names, am/pm, time zones, the connecting words dateparser itself knows) and numbers, and
  holding a month name or a numeric date: it is never asked about a sentence.
- A numeric date that reads as two different days (03/05/2024: 3 May or March 5) is ambiguous.
  It is still recognised as a date, so a line holding it is never quoted as article text, but it
  gives a date only when an order is known (the DATE_ORDER setting or the article's language,
  decided by the caller); 13/05/2024 can only be 13 May and needs no order.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass

__all__ = ["DATE_ORDERS", "DateLine", "WrittenDate", "parse_date", "parse_date_line", "read_date", "read_date_value"]

LANGUAGES = ("en", "fr", "de", "es")  # dateparser tries them in turn: fewer is faster
DATE_ORDERS = ("DMY", "MDY")
_MAX_DATE_CHARS = 80


@dataclass(frozen=True)
class WrittenDate:
    """A date as written, with its day-first and month-first readings (the same date unless the
    text is an ambiguous numeric date; both None when it is not a real, complete date)."""

    text: str
    day_first: dt.date | None
    month_first: dt.date | None

    @property
    def ambiguous(self) -> bool:
        return None not in (self.day_first, self.month_first) and self.day_first != self.month_first

    def date(self, order: str | None = None) -> dt.date | None:
        """The date, read in `order` ("DMY"/"MDY") where the text needs one; None when it is not
        a real date, or is ambiguous and no order is given."""
        if self.day_first == self.month_first:
            return self.day_first
        if order == "DMY":
            return self.day_first
        if order == "MDY":
            return self.month_first
        if self.ambiguous:
            return None
        return self.day_first or self.month_first  # only one reading is a real date

    def problem(self, order: str | None = None) -> str | None:
        """Why date(order) is None, as a phrase for a warning; None when there is a date."""
        if self.date(order) is not None:
            return None
        if self.ambiguous:
            return (
                f"could be {self.day_first.isoformat()} or {self.month_first.isoformat()}"
                " (set DATE_ORDER=DMY or MDY to read it)"
            )
        return "is not a real date with a day, a month and a four-digit year"


# --------------------------------------------------------------------------------------------------
# Which texts are dates at all (cheap, no dateparser call)
# --------------------------------------------------------------------------------------------------


@functools.cache
def _vocabulary() -> tuple[dict[str, frozenset[str]], frozenset[str]]:
    """(per language, every word dateparser accepts in a date; the month names among them),
    lowercased, from dateparser's own locale data."""
    from dateparser.languages.loader import default_loader

    months = {
        "january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
        "november", "december",
    }  # fmt: skip
    weekdays = {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
    vague = {"about", "just", "from", "by", "environ", "etwa", "cerca"}  # "about March 5, 2024" is no date line
    words: dict[str, frozenset[str]] = {}
    month_words: set[str] = set()
    for language in LANGUAGES:
        info = default_loader.get_locale(language).info
        found = {"a", "p", "h"}  # a.m., p.m., 14h30
        for key in months | weekdays | {"am", "pm", "skip", "pertain"}:
            for form in info.get(key) or ():
                for word in re.findall(r"[^\W\d_]+", form.lower()):
                    if word not in vague:
                        found.add(word)
                        if key in months:
                            month_words.add(word)
        words[language] = frozenset(found)
    return words, frozenset(month_words)


_TOKEN = re.compile(r"[^\W\d_]+|\d+")
_NUMERIC_DATE = re.compile(r"(?<!\d)(?:\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{4}[./-]\d{1,2}[./-]\d{1,2})(?!\d)")
_ISO_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|\s?[+-]\d{2}:?\d{2})?)?")


def _date_shaped(text: str) -> tuple[str, tuple[str, ...]] | None:
    """When text holds only date words, time zones and numbers, with a month name or a numeric date:
    the text without its time-zone names, and LANGUAGES ordered by how many of its words each
    knows (dateparser tries them in turn). Else None. The zone is dropped because the date is kept
    as written (never moved into another zone), and finding it is most of dateparser's time."""
    from dateparser.timezone_parser import word_is_tz

    words, month_words = _vocabulary()
    tokens = _TOKEN.findall(text)
    if not any(token.isdigit() for token in tokens):
        return None
    has_month = False
    zones = []
    known = dict.fromkeys(LANGUAGES, 0)
    for token in tokens:
        if token.isdigit():
            continue
        lowered = token.lower()
        has_month = has_month or lowered in month_words
        if token.isupper() and word_is_tz(token) and lowered not in month_words:  # "ET", not the French "et"
            zones.append(token)
            continue
        hits = [language for language in LANGUAGES if lowered in words[language]]
        if not hits:
            return None
        for language in hits:
            known[language] += 1
    if not (has_month or _NUMERIC_DATE.search(text)):
        return None
    for zone in zones:
        text = re.sub(rf"(?<![^\W\d_]){re.escape(zone)}(?![^\W\d_])", " ", text)
    return text, tuple(sorted(LANGUAGES, key=lambda language: -known[language]))


# --------------------------------------------------------------------------------------------------
# Reading a date
# --------------------------------------------------------------------------------------------------


@functools.cache
def _parser(order: str, languages: tuple[str, ...]):
    from dateparser.date import DateDataParser

    settings = {
        "REQUIRE_PARTS": ["day", "month", "year"],
        "PARSERS": ["absolute-time"],  # no relative dates, no bare timestamps
        "DATE_ORDER": order,
        "RETURN_AS_TIMEZONE_AWARE": False,  # the date as written, never shifted into another zone
    }
    return DateDataParser(languages=list(languages), settings=settings)


def _dateparser_date(text: str, order: str, languages: tuple[str, ...] = LANGUAGES) -> dt.date | None:
    try:
        found = _parser(order, languages).get_date_data(text).date_obj
    except Exception:  # third-party parser on arbitrary text: an unreadable date is no date
        return None
    return found.date() if found else None


def _iso_date(text: str) -> dt.date | None:
    try:
        return dt.datetime.fromisoformat(text).date()
    except ValueError:
        return None


@functools.lru_cache(maxsize=8192)
def read_date(text: str) -> WrittenDate | None:
    """The date written in text (nothing else around it but a time and zone), or None when text is
    not a date at all. An impossible or incomplete date is a WrittenDate with no reading."""
    text = text.strip()
    if not text or len(text) > _MAX_DATE_CHARS:
        return None
    if _ISO_SHAPE.fullmatch(text):
        date = _iso_date(text)  # None: shaped like ISO 8601 but impossible (2021-02-30)
        return WrittenDate(text, date, date)
    shaped = _date_shaped(text)
    if shaped is None:
        return None
    if not re.search(r"(?<!\d)\d{4}(?!\d)", text):
        return WrittenDate(text, None, None)  # a two-digit year leaves the century to a guess
    words, languages = shaped
    numeric = _NUMERIC_DATE.search(words)
    if numeric is None:
        date = _dateparser_date(words, "DMY", languages)  # a worded month: the order cannot matter
        return WrittenDate(text, date, date)
    # A numeric date's time ("14:30 Uhr") cannot change its day, and costs dateparser a search
    # through every language for its words: only the date is read, in both orders.
    numbers = numeric.group()
    return WrittenDate(text, _dateparser_date(numbers, "DMY"), _dateparser_date(numbers, "MDY"))


def read_date_value(value: object) -> WrittenDate | None:
    """A metadata value (front matter, sidecar, JSON record, HTML metadata) as a date."""
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return WrittenDate(value.isoformat(), value, value)
    if isinstance(value, str):
        return read_date(value)
    return None


def parse_date(text: str, order: str | None = None) -> dt.date | None:
    """The date written in text, or None (not a date, not a real one, or ambiguous without order)."""
    written = read_date(text)
    return written.date(order) if written else None


# --------------------------------------------------------------------------------------------------
# Date lines: "Published June 20, 2021 Updated Aug. 6, 2021", "Publié le 4 mars 2024"
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DateLine:
    """A line that only states dates, each optionally labelled as the publication or the update."""

    published: WrittenDate | None
    updated: WrittenDate | None


_PUBLISHED_LABELS = (
    r"originally published|first published|published|posted"
    r"|publié|mis en ligne"
    r"|veröffentlicht|erschienen"
    r"|publicado"
)
_UPDATED_LABELS = (
    r"last updated|updated|last modified|modified"
    r"|mis à jour|modifié|actualisé"
    r"|zuletzt aktualisiert|aktualisiert|stand"
    r"|última actualización|actualizado|modificado"
)
_LABEL = re.compile(
    rf"(?<!\w)(?P<label>{_PUBLISHED_LABELS}|{_UPDATED_LABELS})(?:\s+(?:on|le|am|el))?(?!\w)\s*:?\s*",
    re.IGNORECASE,
)
_PUBLISHED = re.compile(_PUBLISHED_LABELS, re.IGNORECASE)
_SEPARATORS = " \t\n|·•;,–—-"


def parse_date_line(text: str) -> DateLine | None:
    """Read a line that consists only of dates, each optionally labelled (Published, Updated,
    Posted, Publié le, Mis à jour, Veröffentlicht am, Aktualisiert, Publicado, Actualizado...).

    Returns None when the text is anything else (so it stays article text). An unlabelled date is
    the publication date. The dates are returned as written: the caller decides the order of an
    ambiguous one and reports the ones that are not real dates.
    """
    if len(text) > 4 * _MAX_DATE_CHARS:  # a paragraph, not a line of dates
        return None
    pieces = _LABEL.split(text.strip())
    # with one group in the pattern: [before the first label, label, chunk, label, chunk, ...]
    labelled = [("published", pieces[0])] + list(zip(pieces[1::2], pieces[2::2]))
    if not pieces[0].strip(_SEPARATORS):
        labelled = labelled[1:]
    if not labelled:
        return None
    published = updated = None
    for label, chunk in labelled:
        written = read_date(chunk.strip(_SEPARATORS))
        if written is None:
            return None
        if _PUBLISHED.fullmatch(label):
            published = published or written
        else:
            updated = updated or written
    return DateLine(published=published, updated=updated)
