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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import date as date_type
from datetime import time as time_of_day
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import redis

from tasks import day_reads, events, metrics, patient_flow, provider_cache, sync_status
from tasks.events import EventPublisher
from tasks.reconcile import Applied, DayRead, Reconciler
from tasks.store import ScheduleStore, WriteCounts
from tasks.sync_metrics import note_unknown_statuses
from tasks.tebra.errors import TebraError

log = logging.getLogger(__name__)

FULL = "full"
INCREMENTAL = "incremental"
# A full read that stores the day ends any suspect_empty episode (tasks/day_reads.py).
_NOT_SUSPECT = {"suspect_empty_since": "", "suspect_empty_kept": "", "suspect_empty_reason": ""}
FULL_SYNC_MAX_AGE_S = 3600  # a day's stored rows are made exactly Tebra's at least hourly (deletions)
MODIFIED_OVERLAP_S = 300  # Tebra's clock and ours may disagree: ask for a little more than strictly needed
MODES = (FULL, INCREMENTAL)


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
    reconciler: Reconciler
    publisher: EventPublisher
    source: AppointmentSource
    clinic_tz: ZoneInfo
    status_ttl_s: int
    results_maxlen: int
    providers: ProviderSource | None = None  # None: fill from the cache only
    providers_ttl_s: int = 3600
    full_sync_max_age_s: int = FULL_SYNC_MAX_AGE_S
    coalesce_days: int = 1  # SYNC_COALESCE_DAYS: 1 fetches the task's own day only
    modified_overlap_s: int = MODIFIED_OVERLAP_S  # TEBRA_MODIFIED_OVERLAP_S
    # How far Tebra's stamps may run behind ours (tasks/tebra_clock.py): asked only by an incremental plan,
    # so a full sync costs no read of it.
    clock_allowance_s: Callable[[], float] = lambda: 0.0
    empty_confirm_s: int = 600  # EMPTY_CONFIRM_MINUTES: a suspect empty day is emptied only this much later


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


@dataclass(frozen=True)
class Begun:
    """A sync that started: its plan, and the days it runs (its own first, then the following days it took,
    each with the id of the task it runs that day for)."""

    plan: SyncPlan
    days: tuple[tuple[str, str], ...]
    started_at: str
    started: float  # perf_counter


def following_days(date: str, count: int) -> list[str]:
    """The ``count`` calendar days after ``date``."""
    day = date_type.fromisoformat(date)
    return [(day + timedelta(days=n)).isoformat() for n in range(1, count + 1)]


def begin(ctx: SyncContext, date: str, task_id: str, *, attempt: int) -> Begun | sync_status.Start:
    """Mark the sync of ``date`` running, decide full or incremental from the day's last syncs, and take
    the queued full syncs of the days after it into the same fetch (up to ``coalesce_days`` in all);
    announce every day it runs. All in one round trip, and one more for the announcements. Returns the
    refused :class:`sync_status.Start` instead when another task runs this day or this task finished it.

    Why several days: a backlog of days (the next two weeks, after an outage) costs one GetAppointments per
    day, and Tebra allows one a second: taking a week per call clears it about five times sooner, and saves
    each day the call's fixed cost (docs/tebra.md, "Coalesced syncs"). Only full syncs are taken together:
    an incremental sync asks Tebra for the rows of one day changed since that day's last sync.
    """
    now = datetime.now(UTC)
    started_at = events.utc_now_iso()
    started = time.perf_counter()
    oldest_full = now - timedelta(seconds=ctx.full_sync_max_age_s)
    start = sync_status.start(
        ctx.redis,
        date,
        task_id,
        ctx.status_ttl_s,
        started_at=started_at,
        attempt=attempt,
        full_before=events.iso_utc(oldest_full),
        following=following_days(date, ctx.coalesce_days - 1),
    )
    if start.outcome != sync_status.STARTED:
        return start
    last = {
        "last_success_started_at": start.last_success_started_at,
        "last_full_started_at": start.last_full_started_at,
    }
    plan = (
        SyncPlan(FULL)
        if start.days
        else plan_sync(
            last, now, ctx.full_sync_max_age_s, lambda: ctx.modified_overlap_s + ctx.clock_allowance_s()
        )
    )
    days = ((date, task_id), *start.days)
    pipe = ctx.redis.pipeline(transaction=False)
    for day, day_task in days:
        fields: dict[str, Any] = {"state": sync_status.RUNNING, "started_at": started_at, "attempt": attempt}
        data: dict[str, Any] = {"date": day, "task_id": day_task, "attempt": attempt}
        if day_task != task_id:
            fields["run_by"] = data["run_by"] = task_id
        sync_status.note_task(pipe, day, day_task, ctx.status_ttl_s, **fields, error="")
        ctx.publisher.publish_on(pipe, events.SCHEDULE_SYNC_STARTED, data)
    pipe.execute()
    return Begun(plan, days, started_at, started)


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


def run_sync(ctx: SyncContext, begun: Begun) -> dict[str, Any]:
    """Fetch every day ``begun`` runs in one window, store and announce each; returns the summary of the
    task's own day (its result: counts, no PHI), naming the other days it synced."""
    (date, task_id), *taken = begun.days
    start_local, _ = clinic_day(date, ctx.clinic_tz)
    _, end_local = clinic_day(max(day for day, _ in begun.days), ctx.clinic_tz)
    modified_since = begun.plan.modified_since
    appointments = ctx.source.get_appointments(start_local, end_local, modified_since=modified_since)
    providers_stale = fill_providers(ctx, appointments)
    note_unknown_statuses(appointments, date=date)
    day_names = [day for day, _ in begun.days]
    by_day: dict[str, Sequence[dict[str, Any]]] = dict(split_days(appointments, date, day_names))
    rejected = day_reads.rejected_by_day(getattr(appointments, "rejected", ()), date, day_names)
    suspects: dict[str, day_reads.Suspect] = {}
    if begun.plan.mode == FULL:  # a full read replaces the stored day: an empty one is checked first
        by_day, suspects = day_reads.screen_empty_days(
            ctx.redis,
            by_day,
            placeholders=getattr(appointments, "placeholders", 0),
            refetch=lambda day: _reread(ctx, day),
            confirm_after=timedelta(seconds=ctx.empty_confirm_s),
        )
    # The own day last: when it reads succeeded, every day of this fetch is done, so a redelivery of this
    # task that finds it so has nothing left to do (tasks/sync_status.py, the start script).
    order = [*taken, (date, task_id)]
    fetched = {str(appointment["id"]) for appointment in appointments}
    kept = [(day, day_task) for day, day_task in order if day in suspects]
    stored = [(day, day_task, by_day[day]) for day, day_task in order if day not in suspects]
    finished_at = events.utc_now_iso()
    summaries = [
        day_reads.finish_suspect(
            ctx, suspects[day], day_task, own_task=task_id, mode=begun.plan.mode, finished_at=finished_at
        )
        for day, day_task in kept
        if day != date
    ]
    if stored:
        set_aside = {row.id for row in getattr(appointments, "rejected", ()) if row.id}
        summaries += finish_days(ctx, begun, stored, providers_stale, fetched, rejected, set_aside)
    if date in suspects:
        summaries.append(
            day_reads.finish_suspect(
                ctx, suspects[date], task_id, own_task=task_id, mode=begun.plan.mode, finished_at=finished_at
            )
        )
    return summaries[-1]


def _reread(ctx: SyncContext, date: str) -> tuple[Sequence[dict[str, Any]], int]:
    """One day read again with an empty <Fields/> (every column): (real rows, placeholder rows)."""
    start_local, end_local = clinic_day(date, ctx.clinic_tz)
    rows = ctx.source.get_appointments(start_local, end_local, all_fields=True)  # type: ignore[call-arg]
    fill_providers(ctx, rows)
    return rows, getattr(rows, "placeholders", 0)


def split_days(
    appointments: Sequence[dict[str, Any]], own: str, days: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """The rows of each day, by the clinic-local date of their start (an ISO string in CLINIC_TZ); a row with
    no start stays with the task's own day, as it would in a fetch of that day alone. Rows of days in the
    window that nobody asked for (a weekend, a day another task runs) are dropped."""
    by_day: dict[str, list[dict[str, Any]]] = {day: [] for day in days}
    for appointment in appointments:
        start = appointment.get("start")
        rows = by_day.get(start[:10] if start else own)
        if rows is not None:
            rows.append(appointment)
    return by_day


def finish_days(
    ctx: SyncContext,
    begun: Begun,
    days: Sequence[tuple[str, str, Sequence[dict[str, Any]]]],
    providers_stale: bool | None,
    fetched: set[str] | None = None,
    rejected: dict[str, int] | None = None,
    kept_ids: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Store each (day, task id, rows), reconciled by appointment id (tasks/reconcile.py), then record,
    announce and release every day, in order: the write's transaction, then one pipeline for the rest.
    Returns each day's summary. ``rejected``: the rows set aside per day (the status's ``rows_rejected``)."""
    own_task = begun.days[0][1]
    mode = begun.plan.mode
    applied = ctx.reconciler.apply(
        [DayRead(day, rows, mode == FULL) for day, _, rows in days],
        read_started_at=begun.started_at,
        fetched=fetched or (),
        keep=kept_ids or (),
    )
    written = [applied.counts[day] for day, _, _ in days]
    finished_at = events.utc_now_iso()
    duration_ms = round((time.perf_counter() - begun.started) * 1000)
    done: dict[str, Any] = {"last_success_started_at": begun.started_at}
    if mode == FULL:
        done["last_full_started_at"] = begun.started_at
    pipe = ctx.redis.pipeline(transaction=False)
    summaries = []
    for (date, task_id, _), counts in zip(days, written, strict=True):
        # The board hears of every status Tebra moved, not only of the clinic's own changes.
        patient_flow.queue_status_moves(pipe, ctx.publisher, date, counts)
        summary: dict[str, Any] = {
            "date": date,
            "task_id": task_id,
            "mode": mode,
            "counts": counts.as_dict(),
            "duration_ms": duration_ms,
        }
        if providers_stale:
            summary["providers_stale"] = True
        rows_rejected = (rejected or {}).get(date, 0)
        if rows_rejected:
            summary["rows_rejected"] = rows_rejected
        if task_id != own_task:
            summary["run_by"] = own_task
        elif len(days) > 1:
            summary["also_synced"] = [day for day, _, _ in days if day != date]
        sync_status.queue_record(
            pipe,
            date,
            task_id,
            ctx.status_ttl_s,
            state=sync_status.SUCCEEDED,
            finished_at=finished_at,
            duration_ms=duration_ms,
            counts=counts.as_dict(),
            mode=mode,
            providers_stale="true" if providers_stale else "",
            error="",
            rows_rejected=rows_rejected,
            **(_NOT_SUSPECT if mode == FULL else {}),
            **done,
        )
        ctx.publisher.publish_on(pipe, events.SCHEDULE_SYNCED, summary)
        sync_status.append_result(
            pipe, task_id, "schedule.sync", sync_status.SUCCEEDED, summary, ctx.results_maxlen
        )
        sync_status.queue_release(pipe, date, task_id)
        summaries.append(summary)
    announce_other_days(pipe, ctx.publisher, applied, {day for day, _, _ in days}, mode, own_task)
    pipe.execute()
    metrics.count_rows_rejected(sum((rejected or {}).values()))
    return summaries


def announce_other_days(
    pipe: Any, publisher: EventPublisher, applied: Applied, announced: set[str], mode: str, by: str
) -> None:
    """A day this read changed without syncing it (an appointment moved out of it): its status moves and
    one ``schedule_synced`` naming the read that changed it, so its board follows."""
    for day, counts in applied.counts.items():
        if day in announced or not counts.changed_anything:
            continue
        announce_day(pipe, publisher, day, counts, {"mode": mode, "run_by": by})


def announce_day(
    pipe: Any, publisher: EventPublisher, day: str, counts: WriteCounts, extra: dict[str, Any]
) -> None:
    """One day's status moves and flags, and its ``schedule_synced`` (counts, no PHI)."""
    patient_flow.queue_status_moves(pipe, publisher, day, counts)
    publisher.publish_on(pipe, events.SCHEDULE_SYNCED, {"date": day, "counts": counts.as_dict(), **extra})
