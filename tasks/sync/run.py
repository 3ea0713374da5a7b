"""One schedule sync as plain functions: ask Tebra for the clinic day, store it, announce it.

The Celery task (tasks/sync/job.py) is a shell around :func:`sync_day`: it starts the sync (the lifecycle's
start script, the plan: tasks/sync/plan.py), runs it (:func:`run_sync`), and turns a Tebra failure into the
verdict of the one retry policy (tasks/retry.py), recorded for every day of the fetch. Everything here takes
its collaborators as arguments so it reads (and tests) without Celery.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import redis
from celery import Celery

from tasks import events, metrics, retry
from tasks.events import EventPublisher
from tasks.job import Outcome, outcome_of
from tasks.patients.details import queue_lookups
from tasks.providers.fill import ProviderSource, fill_providers
from tasks.retry import Limits
from tasks.sync import day_reads, lifecycle
from tasks.sync.announce import announce_other_days, queue_status_moves
from tasks.sync.plan import FULL, SyncPlan, clinic_day, following_days, plan_sync
from tasks.sync.reconcile import DayRead, Reconciler
from tasks.sync.status import read_status
from tasks.sync.store import ScheduleStore
from tasks.sync.unknown_status import note_unknown_statuses
from tasks.tebra.errors import TebraError

log = logging.getLogger(__name__)

# A full read that stores the day ends any suspect_empty episode (tasks/sync/day_reads.py).
_NOT_SUSPECT = {"suspect_empty_since": "", "suspect_empty_kept": "", "suspect_empty_reason": ""}


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
    reconciler: Reconciler
    publisher: EventPublisher
    source: AppointmentSource
    clinic_tz: ZoneInfo
    status_ttl_s: int
    results_maxlen: int
    lock_ttl_s: int = 600  # SYNC_LOCK_TTL_S: how long a day's lock outlives its sync's last sign of life
    providers: ProviderSource | None = None  # None: fill from the cache only
    providers_ttl_s: int = 3600
    full_sync_max_age_s: int = 3600  # FULL_RECONCILE_MINUTES (tasks/sync/plan.py)
    coalesce_days: int = 1  # SYNC_COALESCE_DAYS: 1 fetches the task's own day only
    modified_overlap_s: int = 300  # TEBRA_MODIFIED_OVERLAP_S
    # How far Tebra's stamps may run behind ours (tasks/sync/clock.py): asked only by an incremental plan,
    # so a full sync costs no read of it.
    clock_allowance_s: Callable[[], float] = lambda: 0.0
    details_enabled: bool = False  # PATIENT_DETAILS_ENABLED: queue each synced day's lookups
    empty_confirm_s: int = 600  # EMPTY_CONFIRM_MINUTES: a suspect empty day is emptied only this much later


@dataclass(frozen=True)
class Begun:
    """A sync that started: its plan, and the days it runs (its own first, then the following days it took,
    each with the id of the task it runs that day for)."""

    plan: SyncPlan
    days: tuple[tuple[str, str], ...]
    started_at: str
    started: float  # perf_counter


def begin(ctx: SyncContext, date: str, task_id: str, *, attempt: int) -> Begun | lifecycle.Start:
    """Mark the sync of ``date`` running, decide full or incremental from the day's last syncs, and take
    the queued full syncs of the days after it into the same fetch (up to ``coalesce_days`` in all);
    announce every day it runs. All in one round trip, and one more for the announcements. Returns the
    refused :class:`lifecycle.Start` instead when another task runs this day or this task finished it.

    Why several days: a backlog of days (the next two weeks, after an outage) costs one GetAppointments per
    day, and Tebra allows one a second: taking a week per call clears it about five times sooner, and saves
    each day the call's fixed cost (docs/tebra.md, "Coalesced syncs"). Only full syncs are taken together:
    an incremental sync asks Tebra for the rows of one day changed since that day's last sync.
    """
    now = datetime.now(UTC)
    started_at = events.utc_now_iso()
    started = time.perf_counter()
    oldest_full = now - timedelta(seconds=ctx.full_sync_max_age_s)
    start = lifecycle.start(
        ctx.redis,
        date,
        task_id,
        ctx.status_ttl_s,
        started_at=started_at,
        attempt=attempt,
        full_before=events.iso_utc(oldest_full),
        following=following_days(date, ctx.coalesce_days - 1),
    )
    if start.outcome != lifecycle.STARTED:
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
    lifecycle.queue_started(pipe, ctx, days, started_at=started_at, attempt=attempt)
    pipe.execute()
    return Begun(plan, days, started_at, started)


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
    # task that finds it so has nothing left to do (tasks/sync/lifecycle.py, the start script).
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
    """Store each (day, task id, rows), reconciled by appointment id (tasks/sync/reconcile.py), then record,
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
    # One transaction: whoever reads ``succeeded`` finds the events and the result beside it.
    pipe = ctx.redis.pipeline(transaction=True)
    summaries = []
    for (date, task_id, _), counts in zip(days, written, strict=True):
        # The board hears of every status Tebra moved, not only of the clinic's own changes.
        queue_status_moves(pipe, ctx.publisher, date, counts)
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
        lifecycle.queue_succeeded(
            pipe,
            ctx,
            summary,
            finished_at=finished_at,
            providers_stale="true" if providers_stale else "",
            rows_rejected=rows_rejected,
            **(_NOT_SUSPECT if mode == FULL else {}),
            **done,
        )
        summaries.append(summary)
    announce_other_days(pipe, ctx.publisher, applied, {day for day, _, _ in days}, mode, own_task)
    pipe.execute()
    metrics.count_rows_rejected(sum((rejected or {}).values()))
    return summaries


# -- the task's one call ------------------------------------------------------------------------------------


def sync_day(
    ctx: SyncContext,
    app: Celery,
    date: str,
    task_id: str,
    *,
    attempt: int,
    deferrals: int,
    limits: Limits,
) -> Outcome:
    """Sync ``date`` as task ``task_id``: start it (with the following days it takes), run it, and queue each
    synced day's details lookups after ``schedule_synced`` is out (never before: the board needs nothing
    from them to show the day). A Tebra failure becomes the retry policy's verdict, recorded for every day of
    the fetch (a retry takes the same days again)."""
    begun = begin(ctx, date, task_id, attempt=attempt)  # one script: the redelivery check, the plan, the days
    if isinstance(begun, lifecycle.Start):  # refused: another task runs this day, or this one finished it
        return Outcome(not_run(ctx, date, task_id, begun))
    drop_taken_messages(app, begun.days[1:])
    outcome = outcome_of(partial(run_sync, ctx, begun), attempt=attempt, deferrals=deferrals, limits=limits)
    if outcome.verdict is not None:
        settle(ctx, begun.days, outcome.verdict, outcome.error, attempt=attempt, deferrals=deferrals)
        return outcome
    for day, _ in begun.days:
        queue_lookups(app, ctx.details_enabled, ctx.redis, day)
    return outcome


def settle(
    ctx: SyncContext, days: lifecycle.Days, verdict: retry.Verdict, exc: BaseException | None, *,
    attempt: int, deferrals: int,
) -> None:  # fmt: skip
    """Record the policy's verdict for every day of the fetch: retrying, deferred or failed."""
    if verdict.action == retry.RETRY:
        lifecycle.retrying(ctx, days, code=verdict.code, countdown=verdict.countdown, attempt=attempt)
    elif verdict.action == retry.DEFER and verdict.refusal is not None:
        refusal = verdict.refusal
        breaker = {"state": refusal.state, "reason": refusal.reason or None}
        # A credentials deferral's status says why Tebra is not called, in Tebra's words (no PHI in them).
        message = str(refusal) if getattr(refusal, "code", None) else ""
        lifecycle.deferred(ctx, days, code=verdict.code, countdown=verdict.countdown, deferrals=deferrals,
                           breaker=breaker, message=message)  # fmt: skip
    else:
        lifecycle.failed(ctx, days, code=verdict.code, message=safe_message(exc))


def safe_message(exc: BaseException | None) -> str:
    """Gateway errors carry curated, PHI-free messages; anything else is named by its class only."""
    if isinstance(exc, TebraError):
        return str(exc)[:300]
    return type(exc).__name__


def drop_taken_messages(app: Celery, taken: Sequence[tuple[str, str]]) -> None:
    """Revoke the messages of the days this task took, so that a worker drops each in its main process
    (acknowledged, a ``task-revoked`` event) instead of handing it to a pool process only to learn from the
    start script that the day is taken: that was a whole task's cost for each of them (docs/tebra.md,
    "Coalesced syncs"). Only a shortcut: a worker that misses the broadcast (not yet started, or restarted:
    revokes live in its memory) still runs the message, and the start script acknowledges it as taken."""
    if not taken:
        return
    try:
        app.control.revoke([task_id for _, task_id in taken])
    except Exception as exc:  # the broadcast is an optimisation: the sync goes on without it
        log.warning("taken days' messages not revoked", extra={"error": type(exc).__name__})


def not_run(ctx: SyncContext, date: str, task_id: str, start: lifecycle.Start) -> dict[str, Any]:
    """The result of a task whose day another task runs (``run_by``), or which finished it already."""
    if start.outcome == lifecycle.TAKEN:
        # The other task announces this day with this task's id and releases its lock; if it dies, its own
        # redelivery takes the day again (the start script), so acknowledging this message loses nothing.
        log.info(
            "sync run by another task's fetch", extra={"date": date, "task_id": task_id, "run_by": start.by}
        )
        return {"date": date, "task_id": task_id, "run_by": start.by}
    # Done: at-least-once delivery handed back a finished sync (its worker died after the work but before
    # the acknowledgement, or the broker connection dropped in between: tasks/broker_transport.py). Running
    # it again would change no data, but would announce it twice; this makes it once in effect.
    status = read_status(ctx.redis, date) or {}
    log.info("sync already done; redelivery acknowledged", extra={"date": date, "task_id": task_id})
    lifecycle.redelivered(ctx.redis, date, task_id)
    return {"date": date, "task_id": task_id, "state": status.get("state"),
            "counts": status.get("counts") or {}, "duration_ms": status.get("duration_ms"),
            "redelivered": True}  # fmt: skip
