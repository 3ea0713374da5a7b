"""A sync's plan, full or incremental (docs/tebra.md, "Incremental and periodic syncs"); the clinic's days.

A sync asks only for the rows Tebra changed since the last successful sync of that date began
(``FromLastModifiedDate``, minus an overlap for clock skew and Tebra's measured clock lag) and merges them
into what is stored; it asks for the whole day, and makes the stored day exactly Tebra's (catching deletions),
when the date has no successful sync yet or its last full one is older than ``FULL_SYNC_MAX_AGE_S``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date as date_type
from datetime import datetime, timedelta
from datetime import time as time_of_day
from typing import Any
from zoneinfo import ZoneInfo

from tasks import events

FULL = "full"
INCREMENTAL = "incremental"
FULL_SYNC_MAX_AGE_S = 3600  # a day's stored rows are made exactly Tebra's at least hourly (deletions)
MODIFIED_OVERLAP_S = 300  # Tebra's clock and ours may disagree: ask for a little more than strictly needed


@dataclass(frozen=True)
class SyncPlan:
    """Full or incremental; ``modified_since`` is the FromLastModifiedDate of an incremental sync."""

    mode: str
    modified_since: datetime | None = None


def clinic_day(date: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """Local midnight to the next local midnight (23 or 25 hours on a daylight-saving change)."""
    day = date_type.fromisoformat(date)
    start = datetime.combine(day, time_of_day.min, tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time_of_day.min, tzinfo=tz)
    return start, end


def following_days(date: str, count: int) -> list[str]:
    """The ``count`` calendar days after ``date``."""
    day = date_type.fromisoformat(date)
    return [(day + timedelta(days=n)).isoformat() for n in range(1, count + 1)]


def plan_sync(
    status: dict[str, Any] | None,
    now: datetime,
    full_max_age_s: int,
    overlap_s: Callable[[], float] = lambda: MODIFIED_OVERLAP_S,
) -> SyncPlan:
    """Full unless the date had a successful sync and a full one within ``full_max_age_s`` (a full sync asked
    for with ``mode=full`` reaches here with no last full one: the start script hides it)."""
    if not status:
        return SyncPlan(FULL)
    last_success = events.parse_instant(status.get("last_success_started_at"))
    last_full = events.parse_instant(status.get("last_full_started_at"))
    if last_success is None or last_full is None:
        return SyncPlan(FULL)
    if (now - last_full).total_seconds() >= full_max_age_s:
        return SyncPlan(FULL)
    return SyncPlan(INCREMENTAL, last_success - timedelta(seconds=overlap_s()))
