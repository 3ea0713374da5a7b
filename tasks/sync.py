"""One schedule sync as a plain function: ask Tebra for the clinic day, store it, announce it.

The Celery task in tasks/schedule.py is a thin shell around :func:`run_sync`; everything here takes its
collaborators as arguments so it reads (and tests) without Celery.

Full or incremental (docs/tebra.md, "Incremental and periodic syncs"): a sync asks only for the rows Tebra
changed since the last successful sync of that date began (``FromLastModifiedDate``, minus an overlap for
clock skew) and merges them into what is stored; it asks for the whole day, and makes the stored day exactly
Tebra's (catching deletions), when the date has no successful sync yet or its last full one is older than
``FULL_SYNC_MAX_AGE_S``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import date as date_type
from datetime import time as time_of_day
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import redis

from tasks import events, patient_flow, provider_cache, sync_status
from tasks.events import EventPublisher
from tasks.store import ScheduleStore
from tasks.sync_metrics import note_unknown_statuses
from tasks.tebra.errors import TebraError

log = logging.getLogger(__name__)

FULL = "full"
INCREMENTAL = "incremental"
FULL_SYNC_MAX_AGE_S = 3600  # a day's stored rows are made exactly Tebra's at least hourly (deletions)
MODIFIED_OVERLAP_S = 300  # Tebra's clock and ours may disagree: ask for a little more than strictly needed


class AppointmentSource(Protocol):
    """What a sync needs of the Tebra gateway."""

    def get_appointments(
        self, start_local: datetime, end_local: datetime, *, modified_since: datetime | None = None
    ) -> list[dict[str, Any]]: ...


class ProviderSource(Protocol):
    """Where a sync gets the practice's providers when ``cache:providers`` is missing or stale."""

    def get_providers(self) -> list[dict[str, Any]]: ...


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
    providers: ProviderSource | None = None  # None: fill from the cache only
    providers_ttl_s: int = 3600
    full_sync_max_age_s: int = FULL_SYNC_MAX_AGE_S


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


def plan_sync(status: dict[str, Any] | None, now: datetime, full_max_age_s: int) -> SyncPlan:
    """Full unless the date had a successful sync and a full one within ``full_max_age_s``."""
    if not status:
        return SyncPlan(FULL)
    last_success = _instant(status.get("last_success_started_at"))
    last_full = _instant(status.get("last_full_started_at"))
    if last_success is None or last_full is None:
        return SyncPlan(FULL)
    if (now - last_full).total_seconds() >= full_max_age_s:
        return SyncPlan(FULL)
    return SyncPlan(INCREMENTAL, last_success - timedelta(seconds=MODIFIED_OVERLAP_S))


def _instant(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def fill_providers(ctx: SyncContext, appointments: Sequence[dict[str, Any]]) -> bool | None:
    """Fill provider ids and names missing from rows from the day's providers; returns whether the list used
    was stale (None: no row needed it, so neither the cache nor Tebra was asked).

    Cheap by construction: one GET of ``cache:providers`` only when a row lacks a provider id or name, and
    one GetProviders (its own 500 ms throttle slot, never GetAppointments') only when that cache is missing
    or older than an hour and no other process is already refreshing it. Tebra being down leaves the sync
    with the stale list, flagged.
    """
    needy = [a for a in appointments if not (a.get("provider_id") and a.get("provider_name"))]
    if not needy:
        return None
    providers, stale = _day_providers(ctx)
    by_id = {str(p["id"]): p for p in providers}
    by_name = {str(p.get("full_name") or "").casefold(): p for p in providers if p.get("full_name")}
    for appointment in needy:
        found = by_id.get(str(appointment.get("provider_id") or "")) or by_name.get(
            str(appointment.get("provider_name") or "").casefold()
        )
        if found is not None:
            appointment["provider_id"] = appointment.get("provider_id") or str(found["id"])
            appointment["provider_name"] = appointment.get("provider_name") or found.get("full_name")
    return stale


def _day_providers(ctx: SyncContext) -> tuple[list[dict[str, Any]], bool]:
    cached = provider_cache.read(ctx.redis)
    if cached is not None and cached.fresh:
        return cached.providers, False
    if ctx.providers is not None and provider_cache.claim_refresh(ctx.redis):
        try:
            providers = ctx.providers.get_providers()
        except TebraError as exc:
            log.warning("providers not refreshed, using the cached list", extra={"code": exc.outcome})
        else:
            provider_cache.write(ctx.redis, providers, ctx.providers_ttl_s)
            return providers, False
    return (cached.providers if cached else []), True


def run_sync(
    ctx: SyncContext, date: str, task_id: str, status: dict[str, Any] | None, *, attempt: int = 0
) -> dict[str, Any]:
    """Sync one clinic day; returns the summary that is the task's result (counts, no PHI).

    ``status`` is the day's stored status as the task read it on arrival (tasks/sync_status.read_status):
    it decides full or incremental, and is not read a second time.
    """
    started = time.perf_counter()
    started_at = events.utc_now_iso()
    plan = plan_sync(status, datetime.now(UTC), ctx.full_sync_max_age_s)
    mark_started(ctx, date, task_id, attempt)
    start_local, end_local = clinic_day(date, ctx.clinic_tz)
    appointments = ctx.source.get_appointments(start_local, end_local, modified_since=plan.modified_since)
    providers_stale = fill_providers(ctx, appointments)
    note_unknown_statuses(appointments, date=date)
    # The board hears of every status Tebra moved, not only of the clinic's own changes.
    counts = patient_flow.write_day_announced(
        ctx.redis, ctx.store, ctx.publisher, date, appointments, full=plan.mode == FULL
    )
    duration_ms = round((time.perf_counter() - started) * 1000)
    summary: dict[str, Any] = {
        "date": date,
        "task_id": task_id,
        "mode": plan.mode,
        "counts": counts.as_dict(),
        "duration_ms": duration_ms,
    }
    if providers_stale:
        summary["providers_stale"] = True
    done: dict[str, Any] = {"last_success_started_at": started_at}
    if plan.mode == FULL:
        done["last_full_started_at"] = started_at
    sync_status.record(
        ctx.redis,
        date,
        task_id,
        ctx.status_ttl_s,
        state=sync_status.SUCCEEDED,
        finished_at=events.utc_now_iso(),
        duration_ms=duration_ms,
        counts=counts.as_dict(),
        mode=plan.mode,
        providers_stale="true" if providers_stale else "",
        error="",
        **done,
    )
    ctx.publisher.publish(events.SCHEDULE_SYNCED, summary)
    sync_status.append_result(
        ctx.redis, task_id, "schedule.sync", sync_status.SUCCEEDED, summary, ctx.results_maxlen
    )
    return summary
