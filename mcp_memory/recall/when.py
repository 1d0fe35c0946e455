"""The time a recall query names ("on May 3, 2023", "in December 2023", "last week"), as a period.

"What did John do the week before August 3, 2023?" is about what was said around that date,
yet its words say nothing of when a memory was stored: BM25 and embeddings cannot see it.
recall (recall/engine.py) therefore favours candidates stored inside the period the query names.
Only calendar dates a reader would agree on are recognised: a day, a month or a year given
with its year; a day or a month without one (in the year the query names elsewhere, else the latest such
day or month that has begun);
`YYYY-MM-DD`; and today, yesterday, this/last/previous week, month and year (the calendar one)
and the past week, month or year (up to now), relative to the clock.
Several dates in one query ("between March 3 and May 5, 2023") give the period spanning them.
Nothing here filters: a query that names no time, or a time no memory has, ranks as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MONTHS = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
_ABBREVIATIONS = {name[:3]: index for index, name in enumerate(MONTHS, start=1)} | {"sept": 9}
_MONTH_NUMBER = {name: index for index, name in enumerate(MONTHS, start=1)} | _ABBREVIATIONS

_MONTH = r"(?P<month>" + "|".join(sorted(_MONTH_NUMBER, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"
# Tried in order; each match's text is blanked before the next pattern looks, so "May 3, 2023"
# is not also read as "May" and as "2023".
_PATTERNS = [
    re.compile(r"\b(?P<year>(?:19|20)\d\d)-(?P<month_number>[01]\d)-(?P<day>[0-3]\d)\b"),
    re.compile(rf"\b{_MONTH}\s+{_DAY},?\s+(?:of\s+)?{_YEAR}\b", re.IGNORECASE),
    re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b", re.IGNORECASE),
    re.compile(rf"\b{_MONTH},?\s+(?:of\s+)?{_YEAR}\b", re.IGNORECASE),
    re.compile(rf"\b{_MONTH}\s+{_DAY}\b", re.IGNORECASE),
    re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH}\b", re.IGNORECASE),
    # A month alone only after "in"/"during"/"since": "may" is also a verb, "march" a noun.
    re.compile(r"\b(?:in|during|since)\s+(?P<month>" + "|".join(MONTHS) + r")\b(?!\s+\d)", re.IGNORECASE),
    re.compile(rf"\b{_YEAR}\b"),
]
_RELATIVE = re.compile(
    r"\b(?P<word>today|yesterday|(?:this|last|past|previous)\s+(?P<unit>week|month|year))\b", re.IGNORECASE
)


@dataclass(frozen=True)
class Period:
    """A span of time a query names: [start, end), and the words that named it."""

    start: datetime
    end: datetime
    words: str


def named_period(text: str, now: datetime) -> Period | None:
    """The period the query's dates cover, or None when it names no date (relative words count from `now`)."""
    found: list[Period] = []
    rest = text
    named_year = re.search(_YEAR, text)
    year = int(named_year.group("year")) if named_year else None
    for pattern in _PATTERNS:
        for match in pattern.finditer(rest):
            period = _explicit(match, now, year)
            if period is not None:
                found.append(period)
        rest = pattern.sub(lambda m: " " * len(m.group(0)), rest)
    if not found:
        found = [p for p in (_relative(m, now) for m in _RELATIVE.finditer(text)) if p is not None]
    if not found:
        return None
    ordered = sorted(found, key=lambda p: p.start)
    return Period(
        start=ordered[0].start,
        end=max(p.end for p in found),
        words=", ".join(p.words for p in ordered),
    )


def _explicit(match: re.Match[str], now: datetime, named_year: int | None) -> Period | None:
    parts = match.groupdict()
    month = (
        int(parts["month_number"])
        if parts.get("month_number")
        else _MONTH_NUMBER.get((parts.get("month") or "").lower())
    )
    day = int(parts["day"]) if parts.get("day") else None
    year = int(parts["year"]) if parts.get("year") else None
    words = match.group(0).strip()
    try:
        if month is None:  # a year alone
            return None if year is None else Period(_utc(year, 1, 1), _utc(year + 1, 1, 1), words)
        if year is None and named_year is not None:  # "between March 3 and May 5, 2023"
            year = named_year
        elif year is None:  # the latest such day or month that has begun
            year = now.year
            if _utc(year, month, day or 1) > now:
                year -= 1
        if day is None:
            return Period(_utc(year, month, 1), _utc(year + month // 12, month % 12 + 1, 1), words)
        start = _utc(year, month, day)
        return Period(start, start + timedelta(days=1), words)
    except ValueError:  # "February 30": not a date
        return None


def _relative(match: re.Match[str], now: datetime) -> Period | None:
    word = match.group("word").lower()
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    words = match.group(0)
    if word == "today":
        return Period(today, today + timedelta(days=1), words)
    if word == "yesterday":
        return Period(today - timedelta(days=1), today, words)
    unit, current = match.group("unit").lower(), word.startswith("this")
    if word.startswith("past"):  # the last seven days, month or year up to now
        length = {"week": timedelta(days=7), "month": timedelta(days=31), "year": timedelta(days=366)}[unit]
        return Period(now - length, now, words)
    if unit == "week":
        monday = today - timedelta(days=today.weekday())
        start = monday if current else monday - timedelta(days=7)
        return Period(start, start + timedelta(days=7), words)
    if unit == "month":
        first = today.replace(day=1)
        start = first if current else (first - timedelta(days=1)).replace(day=1)
        end = _utc(start.year + start.month // 12, start.month % 12 + 1, 1)
        return Period(start, end, words)
    start = _utc(today.year if current else today.year - 1, 1, 1)
    return Period(start, _utc(start.year + 1, 1, 1), words)


def _utc(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)
