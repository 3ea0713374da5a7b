"""One schedule sync as a plain function: ask Tebra for the clinic day, store it, announce it.

The Celery task in tasks/schedule.py is a thin shell around :func:`run_sync`; everything here takes its
collaborators as arguments so it reads (and tests) without Celery.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date as date_type
from datetime import datetime, timedelta
from datetime import time as time_of_day
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import redis

from tasks import events, sync_status
from tasks.events import EventPublisher
from tasks.store import ScheduleStore


class AppointmentSource(Protocol):
    """What a sync needs of the Tebra gateway."""

    def get_appointments(
        self, start_local: datetime, end_local: datetime, *, modified_since: datetime | None = None
    ) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class SyncContext:
    """The collaborators of one sync."""

    redis: redis.Redis
    store: ScheduleStore
    publisher: EventPublisher
    source: AppointmentSource
    clinic_tz: ZoneInfo
    status_ttl_s: int
    results_maxlen: int


def clinic_day(date: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """Local midnight to the next local midnight (23 or 25 hours on a daylight-saving change)."""
    day = date_type.fromisoformat(date)
    start = datetime.combine(day, time_of_day.min, tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time_of_day.min, tzinfo=tz)
    return start, end


def mark_started(ctx: SyncContext, date: str, task_id: str, attempt: int) -> None:
    """Record and announce that a sync of ``date`` is running."""
    sync_status.record(
        ctx.redis,
        date,
        task_id,
        ctx.status_ttl_s,
        state=sync_status.RUNNING,
        started_at=events.utc_now_iso(),
        attempt=attempt,
        error="",
    )
    ctx.publisher.publish(
        events.SCHEDULE_SYNC_STARTED, {"date": date, "task_id": task_id, "attempt": attempt}
    )


def run_sync(ctx: SyncContext, date: str, task_id: str, *, attempt: int = 0) -> dict[str, Any]:
    """Sync one clinic day; returns the summary that is the task's result (counts, no PHI)."""
    started = time.perf_counter()
    mark_started(ctx, date, task_id, attempt)
    start_local, end_local = clinic_day(date, ctx.clinic_tz)
    appointments = ctx.source.get_appointments(start_local, end_local)
    counts = ctx.store.write_day(date, appointments)
    duration_ms = round((time.perf_counter() - started) * 1000)
    summary: dict[str, Any] = {
        "date": date,
        "task_id": task_id,
        "counts": counts.as_dict(),
        "duration_ms": duration_ms,
    }
    sync_status.record(
        ctx.redis,
        date,
        task_id,
        ctx.status_ttl_s,
        state=sync_status.SUCCEEDED,
        finished_at=events.utc_now_iso(),
        duration_ms=duration_ms,
        counts=counts.as_dict(),
        error="",
    )
    ctx.publisher.publish(events.SCHEDULE_SYNCED, summary)
    sync_status.append_result(
        ctx.redis, task_id, "schedule.sync", sync_status.SUCCEEDED, summary, ctx.results_maxlen
    )
    return summary
