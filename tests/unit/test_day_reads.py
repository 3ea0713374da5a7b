"""The empty-read decision alone: apply, read again with an empty <Fields/>, or keep as suspect_empty."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from tasks.sync.day_reads import APPLY, KEEP, REREAD, judge_empty, rejected_by_day

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
TEN = timedelta(minutes=10)


@pytest.mark.parametrize(
    ("stored", "rows", "placeholder_only", "reread", "since", "verdict"),
    [
        (40, 38, False, False, None, APPLY),  # rows: the read is the day
        (0, 0, False, False, None, APPLY),  # nothing stored, nothing read: an empty day
        (40, 0, False, False, None, REREAD),  # a day of 40 read empty: ask again with every column
        (40, 0, True, False, None, REREAD),  # placeholder only: the same
        (0, 0, True, False, None, REREAD),  # placeholder only is never "no appointments", even for a new day
        (40, 40, False, True, None, APPLY),  # the re-read brought the rows back
        (40, 0, False, True, None, KEEP),  # empty twice now: keep, suspect_empty
        (40, 0, False, True, NOW - timedelta(minutes=9), KEEP),  # suspect, not long enough yet
        (40, 0, False, True, NOW - TEN, APPLY),  # a second empty read 10 minutes on: the day is empty
    ],
)
def test_judge_empty(
    stored: int, rows: int, placeholder_only: bool, reread: bool, since: datetime | None, verdict: str
) -> None:
    assert (
        judge_empty(
            stored,
            rows,
            placeholder_only=placeholder_only,
            reread=reread,
            suspect_since=since,
            now=NOW,
            confirm_after=TEN,
        )
        == verdict
    )


def test_rows_set_aside_count_on_their_day_or_the_tasks_own() -> None:
    rejected = [
        SimpleNamespace(day="2026-12-02"),
        SimpleNamespace(day=None),
        SimpleNamespace(day="2027-01-01"),
    ]
    assert rejected_by_day(rejected, "2026-12-01", ["2026-12-01", "2026-12-02"]) == {
        "2026-12-01": 2,
        "2026-12-02": 1,
    }
