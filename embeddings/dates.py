"""Strict date parsing for article metadata.

Only a handful of explicit forms are accepted, and an impossible date (Feb. 30, month 13, 25:00) is
rejected rather than guessed: a wrong date in an answer is worse than no date. No fuzzy parsing, and
nothing is ever filled in from "today".

Accepted (the whole text must match; surrounding whitespace is ignored):
    Aug. 9, 2021 / Aug 9 2021 / Sept. 9, 2021 / August 9, 2021 / Monday, Aug. 9, 2021
    9 August 2021 / 9 Aug. 2021
    2021-08-09 / 2021-08-09T10:15:00Z / 2021-08-09 10:15
    any of the word forms followed by a time: "Aug. 9, 2021, 10:15 a.m. ET", "Aug. 9, 2021 at 3 p.m."
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

__all__ = ["DateLine", "coerce_date", "parse_date", "parse_date_line"]

_FULL_MONTHS = (
    "january february march april may june july august september october november december"
).split()
_MONTH_NUMBERS: dict[str, int] = {name: i for i, name in enumerate(_FULL_MONTHS, start=1)}
_ABBREVIATIONS: dict[str, int] = {name[:3]: i for name, i in _MONTH_NUMBERS.items()}
_ABBREVIATIONS["sept"] = 9
_MONTH_NUMBERS.update(_ABBREVIATIONS)

_WEEKDAY = (
    r"(?:(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"
    r"|Mon|Tues?|Wed|Thu(?:rs?)?|Fri|Sat|Sun)\.?,?\s+)?"
)
_MONTH = r"(?P<month>[A-Za-z]{3,9})(?P<dot>\.)?"
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>\d{4})"
# A clock time after a worded date: "10:15 a.m. ET", "3 p.m.", "22:05", optionally after "," or "at".
_TIME = (
    r"(?:\s*(?:,|\bat\b|\||·)?\s*"
    r"(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*(?P<ampm>[ap]\.?\s?m\.?)?"
    r"(?:\s+[A-Z]{2,5})?)?"
)

_MONTH_DAY_YEAR = re.compile(rf"{_WEEKDAY}{_MONTH}\s+{_DAY},?\s+{_YEAR}{_TIME}", re.IGNORECASE)
_DAY_MONTH_YEAR = re.compile(rf"{_WEEKDAY}{_DAY}\s+{_MONTH},?\s+{_YEAR}{_TIME}", re.IGNORECASE)
_ISO = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"(?:[T ](?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.\d{1,9})?)?"
    r"(?:Z|[+-]\d{2}:?\d{2})?)?"
)


def _month_number(token: str, has_dot: bool) -> int | None:
    token = token.lower()
    if has_dot and token not in _ABBREVIATIONS:
        return None  # "August." is not a way anyone writes a month
    return _MONTH_NUMBERS.get(token)


def _valid_time(match: re.Match[str]) -> bool:
    hour, minute = match.group("hour"), match.group("minute")
    if hour is None:
        return True
    if minute is None and not match.groupdict().get("ampm"):
        return False  # a bare number after the year is not a time
    limit = 12 if match.groupdict().get("ampm") else 23
    if int(hour) > limit or (minute is not None and int(minute) > 59):
        return False
    second = match.groupdict().get("second")
    return second is None or int(second) <= 59


def _build_date(year: int, month: int | None, day: int) -> dt.date | None:
    if month is None:
        return None
    try:
        return dt.date(year, month, day)
    except ValueError:  # Feb. 30, month 13, day 0
        return None


def _date_match(text: str) -> re.Match[str] | None:
    """The regex match when text is shaped like a date (even an impossible one), else None."""
    text = text.strip()
    for pattern in (_MONTH_DAY_YEAR, _DAY_MONTH_YEAR, _ISO):
        match = pattern.fullmatch(text)
        if match:
            return match
    return None


def _date_from_match(match: re.Match[str]) -> dt.date | None:
    if not _valid_time(match):
        return None
    month_text = match.group("month")
    if month_text.isdigit():
        month = int(month_text)
    else:
        month = _month_number(month_text, bool(match.groupdict().get("dot")))
    return _build_date(int(match.group("year")), month, int(match.group("day")))


def parse_date(text: str) -> dt.date | None:
    """The date written in text (one of the accepted forms, nothing else around it), or None."""
    match = _date_match(text)
    return _date_from_match(match) if match else None


def coerce_date(value: object) -> dt.date | None:
    """A metadata value (front matter, sidecar, JSON record) as a date, or None when it is not one."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        return parse_date(value)
    return None


@dataclass(frozen=True)
class DateLine:
    """A line that only states dates, e.g. 'Published June 20, 2021 Updated Aug. 6, 2021'."""

    published: dt.date | None
    updated: dt.date | None
    invalid: tuple[str, ...] = ()  # date-shaped parts that are not real dates ("Feb. 30, 2021")


_PUBLISHED_LABELS = {"published", "posted", "originally published", "first published"}
_LABEL = re.compile(
    r"\b(originally published|first published|last updated|last modified|published|posted|updated|modified)"
    r"(?:\s+on)?\s*:?\s*",
    re.IGNORECASE,
)
_SEPARATORS = " \t\n|·•;,–—-"


def parse_date_line(text: str) -> DateLine | None:
    """Read a block that consists only of dates, each optionally labelled Published/Updated.

    Returns None when the text is anything else (so it stays article text). An unlabelled date is the
    publication date. A date-shaped but impossible date is reported in `invalid`, never guessed.
    """
    pieces = _LABEL.split(text.strip())
    # pieces = [before first label, label, chunk, label, chunk, ...]
    labelled = [("published", pieces[0])] + list(zip(pieces[1::2], pieces[2::2]))
    if not pieces[0].strip(_SEPARATORS):
        labelled = labelled[1:]
    if not labelled:
        return None
    published = updated = None
    invalid: list[str] = []
    for label, chunk in labelled:
        chunk = chunk.strip(_SEPARATORS)
        match = _date_match(chunk)
        if match is None:
            return None
        date = _date_from_match(match)
        if date is None:
            invalid.append(chunk)
        elif label.lower() in _PUBLISHED_LABELS:
            published = published or date
        else:
            updated = updated or date
    return DateLine(published=published, updated=updated, invalid=tuple(invalid))
