"""Filter dates in every form Tebra accepts, and response dates in .NET's en-US rendering."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tebra_sim.dates import INVALID_DATE_MESSAGE, InvalidDate, parse_filter_date, render

CHICAGO = ZoneInfo("America/Chicago")


@pytest.mark.parametrize(
    ("raw", "expected", "has_time"),
    [
        ("3/2/2026", datetime(2026, 3, 2), False),
        ("03/02/2026", datetime(2026, 3, 2), False),
        ("11/01/2021 4:00:00 AM", datetime(2021, 11, 1, 4), True),
        ("3/2/2026 12:30:00 PM", datetime(2026, 3, 2, 12, 30), True),
        ("3/2/2026 12:00:00 AM", datetime(2026, 3, 2, 0, 0), True),
        ("3/2/2026 11:59:59 PM", datetime(2026, 3, 2, 23, 59, 59), True),
        ("2026-03-02", datetime(2026, 3, 2), False),
        ("2026-03-02T08:15:00", datetime(2026, 3, 2, 8, 15), True),
        ("2026-03-02T08:15:00.250", datetime(2026, 3, 2, 8, 15, 0, 250000), True),
        # An instant with a zone lands on the practice's wall clock (CST is UTC-6 in March before DST).
        ("2026-03-02T14:15:00Z", datetime(2026, 3, 2, 8, 15), True),
        ("2026-07-02T14:15:00Z", datetime(2026, 7, 2, 9, 15), True),
        ("2026-03-02T08:15:00-05:00", datetime(2026, 3, 2, 7, 15), True),
    ],
)
def test_accepted_filter_dates(raw: str, expected: datetime, has_time: bool) -> None:
    assert parse_filter_date(raw, CHICAGO) == (expected, has_time)


@pytest.mark.parametrize(
    "raw", ["", "tomorrow", "2/30/2026", "13/1/2026", "3/2/2026 13:00:00 PM", "2026-3-2"]
)
def test_refused_filter_dates(raw: str) -> None:
    with pytest.raises(InvalidDate, match=INVALID_DATE_MESSAGE):
        parse_filter_date(raw, CHICAGO)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2026, 9, 23, 13, 0), "9/23/2026 1:00:00 PM"),
        (datetime(2026, 1, 5, 0, 7, 9), "1/5/2026 12:07:09 AM"),
        (datetime(2026, 12, 31, 12, 0), "12/31/2026 12:00:00 PM"),
        (datetime(2026, 3, 2, 8, 15), "3/2/2026 8:15:00 AM"),
    ],
)
def test_rendering(value: datetime, text: str) -> None:
    assert render(value) == text
    assert parse_filter_date(text, CHICAGO)[0] == value
