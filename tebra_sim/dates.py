"""Dates as Tebra's .NET service reads and writes them (docs/tebra.md, "Dates").

Filter dates arrive as free strings that .NET's ``DateTime.Parse`` accepts with en-US culture; response dates
leave as ``M/d/yyyy h:mm:ss AM`` in the practice's wall-clock time with no offset.
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# .NET's FormatException text, which is what a caller sees for a date it cannot read.
INVALID_DATE_MESSAGE = "String was not recognized as a valid DateTime."

_US = re.compile(
    r"^(?P<month>\d{1,2})/(?P<day>\d{1,2})/(?P<year>\d{4})"
    r"(?:\s+(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?\s*(?P<ampm>[AaPp][Mm])?)?$"
)
_ISO = re.compile(
    r"^(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"(?:[T ](?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{1,7}))?)?"
    r"(?P<zone>Z|[+-]\d{2}:?\d{2})?)?$"
)


class InvalidDate(ValueError):
    """A filter date .NET would refuse."""


def parse_filter_date(raw: str, practice_tz: ZoneInfo) -> tuple[datetime, bool]:
    """Read a filter date into naive practice-local time; the flag says whether a time of day was given.

    Accepted: ``M/d/yyyy``, ``M/d/yyyy h:mm[:ss] AM|PM`` (or 24-hour without AM/PM), ISO ``yyyy-MM-dd`` and
    ``yyyy-MM-ddTHH:mm[:ss[.fff]]`` with or without ``Z``/offset. An instant with a zone is converted to the
    practice's wall clock, which is what .NET's Parse does on a server that runs in the practice's zone.
    """
    text = raw.strip()
    match = _US.match(text) or _ISO.match(text)
    if match is None:
        raise InvalidDate(INVALID_DATE_MESSAGE)
    parts = match.groupdict()
    try:
        hour = int(parts["hour"] or 0)
        ampm = (parts.get("ampm") or "").upper()
        if ampm:
            if not 1 <= hour <= 12:
                raise InvalidDate(INVALID_DATE_MESSAGE)
            hour = hour % 12 + (12 if ampm == "PM" else 0)
        fraction = (parts.get("fraction") or "").ljust(6, "0")[:6]
        value = datetime(
            int(parts["year"]),
            int(parts["month"]),
            int(parts["day"]),
            hour,
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int(fraction or 0),
        )
    except ValueError as exc:  # 2/30/2026, 25:00 and the like
        raise InvalidDate(INVALID_DATE_MESSAGE) from exc
    zone = parts.get("zone")
    if zone:
        offset = timedelta(0) if zone == "Z" else _offset(zone)
        value = (value - offset).replace(tzinfo=ZoneInfo("UTC")).astimezone(practice_tz).replace(tzinfo=None)
    return value, parts["hour"] is not None


def _offset(zone: str) -> timedelta:
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    return sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))


def render(value: datetime) -> str:
    """``9/23/2026 1:00:00 PM``: .NET en-US general format, no leading zeros, no offset."""
    # Four dates in every row written: the day and the time of day are each formatted once and then looked up.
    return _day_text(value.toordinal()) + _clock_text(value.hour * 3600 + value.minute * 60 + value.second)


@functools.lru_cache(maxsize=4096)
def _day_text(ordinal: int) -> str:
    day = date.fromordinal(ordinal)
    return f"{day.month}/{day.day}/{day.year} "


@functools.cache  # at most 86,400 entries, one per second of a day
def _clock_text(seconds: int) -> str:
    hour, minute, second = seconds // 3600, seconds // 60 % 60, seconds % 60
    suffix = "PM" if hour >= 12 else "AM"
    return f"{hour % 12 or 12}:{minute:02d}:{second:02d} {suffix}"


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min)


def practice_now(practice_tz: ZoneInfo) -> datetime:
    """The practice's wall clock, to the second (Tebra renders no fractions, so nothing finer is stored)."""
    return datetime.now(practice_tz).replace(tzinfo=None, microsecond=0)
