"""The watch: the board follows Tebra by itself, one GetAppointments per poll for the whole horizon.

Every poll asks Tebra for the appointments modified since the last poll began (``FromLastModifiedDate``,
started earlier by the overlap and Tebra's measured clock lag, tasks/sync/clock.py) whose start is today
through today + ``SYNC_HORIZON_DAYS`` in CLINIC_TZ: one call, whatever the number of days, so a change on
any day, a move between two days included, is seen by the same read. At least every
``FULL_RECONCILE_MINUTES`` (and on the first poll, and while the clock lag is unknown) the poll asks for the
whole horizon instead, which catches deletions: an appointment Tebra no longer has leaves its day.

Beat ticks often (:func:`tick_s`); a tick runs a poll only when one is due (``TEBRA_POLL_INTERVAL_S``
inside ``CLINIC_HOURS``, ``TEBRA_POLL_INTERVAL_OFF_HOURS_S`` outside) and only when it takes the lease
(``watch:lease``, SET NX PX): one poll at a time however many beats or workers there are. The cursor moves
only when a poll's write succeeded, so a poll refused by the breaker or the throttle, or failed, is simply
caught up by the next: nothing is lost, the next read covers the gap.

What a poll changed is announced day by day: ``schedule_synced`` (``mode`` ``watch`` or ``watch_full``) for
each day it changed, ``patient_status_changed``, ``patient_removed`` and ``patient_conflict`` per patient;
a poll that changed nothing announces nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import redis
from ulid import ULID

from config import Settings
from tasks import events, keys, names, results
from tasks.events import EventPublisher
from tasks.sync import clock, day_reads, lifecycle
from tasks.sync.announce import announce_day
from tasks.sync.plan import clinic_day
from tasks.sync.reconcile import DayRead, Reconciler
from tasks.sync.run import AppointmentSource

log = logging.getLogger(__name__)

WATCH = "watch"
WATCH_FULL = "watch_full"
SKIPPED_RUNNING = "running"  # another poll holds the lease
SKIPPED_NOT_DUE = "not_due"
SKIPPED_OFF = "off"
SKIPPED_WAITING = "waiting"  # the breaker said when to come back, and that is not yet

# Compare-and-delete: only the poll that holds the lease lets it go.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class WatchContext:
    """The collaborators of one poll."""

    redis: redis.Redis
    reconciler: Reconciler
    publisher: EventPublisher
    source: AppointmentSource
    settings: Settings

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.settings.clinic_tz)

    def suspect_context(self) -> SimpleNamespace:
        """What recording a day kept as suspect_empty needs (tasks/sync/day_reads.py ``finish_suspect``)."""
        return SimpleNamespace(
            redis=self.redis,
            publisher=self.publisher,
            status_ttl_s=self.settings.retention_days * 86400,
            results_maxlen=self.settings.stream_maxlen,
        )


def tick_s(settings: Settings) -> int:
    """How often beat offers a poll: a tenth of the interval, 5 to 30 s (a tick that is not due costs one
    Redis read), so a poll starts at most that late."""
    return max(5, min(30, settings.tebra_poll_interval_s // 10))


def interval_s(settings: Settings, now: datetime) -> int:
    """The poll interval in force at ``now``: inside CLINIC_HOURS (clinic time) or outside them."""
    opens, closes = settings.clinic_hours_range()
    wall = now.astimezone(ZoneInfo(settings.clinic_tz)).time()
    if opens <= wall < closes:
        return settings.tebra_poll_interval_s
    return settings.tebra_poll_interval_off_hours_s


def horizon(settings: Settings, now: datetime) -> list[str]:
    """Today through today + SYNC_HORIZON_DAYS, clinic time."""
    today = now.astimezone(ZoneInfo(settings.clinic_tz)).date()
    return [(today + timedelta(days=n)).isoformat() for n in range(settings.sync_horizon_days + 1)]


def plan_poll(
    state: dict[str, str], settings: Settings, now: datetime, *, force: bool, allowance_s: float | None
) -> tuple[str | None, datetime | None]:
    """(skip reason or None, FromLastModifiedDate or None for a full read of the horizon)."""
    if settings.tebra_poll_interval_s == 0:
        return SKIPPED_OFF, None
    not_before = events.parse_instant(state.get("not_before"))
    if not force and not_before is not None and now < not_before:
        return SKIPPED_WAITING, None
    last = events.parse_instant(state.get("last_started_at"))
    slack = tick_s(settings) / 2  # a tick a moment early still counts: otherwise polls slip a whole tick
    if not force and last is not None and (now - last).total_seconds() < interval_s(settings, now) - slack:
        return SKIPPED_NOT_DUE, None
    cursor = events.parse_instant(state.get("cursor"))
    last_full = events.parse_instant(state.get("last_full_started_at"))
    full_due = last_full is None or (now - last_full).total_seconds() >= settings.full_reconcile_minutes * 60
    if cursor is None or full_due or allowance_s is None:
        return None, None
    return None, cursor - timedelta(seconds=settings.tebra_modified_overlap_s + allowance_s)


def run_watch(ctx: WatchContext, *, force: bool = False, force_full: bool = False) -> dict[str, Any]:
    """One tick: poll Tebra if a poll is due and no other runs; returns a summary (counts, no PHI)."""
    run_id = str(ULID())
    lease_ms = (ctx.settings.task_time_limit_s + 30) * 1000
    if not ctx.redis.set(keys.WATCH_LEASE, run_id, nx=True, px=lease_ms):
        return {"skipped": SKIPPED_RUNNING}
    try:
        now = datetime.now(UTC)
        state = ctx.redis.hgetall(keys.WATCH_STATE)
        measured = clock.read(ctx.redis)
        skip, modified_since = plan_poll(
            state, ctx.settings, now, force=force or force_full, allowance_s=measured.allowance_s
        )
        if skip is not None:
            return {"skipped": skip}
        if force_full:
            modified_since = None
        return poll(ctx, run_id, now, modified_since)
    finally:
        ctx.redis.eval(_RELEASE_LUA, 1, keys.WATCH_LEASE, run_id)


def poll(ctx: WatchContext, run_id: str, now: datetime, modified_since: datetime | None) -> dict[str, Any]:
    """Read the horizon (modified since ``modified_since``, or all of it), reconcile, announce, advance."""
    days = horizon(ctx.settings, now)
    mode = WATCH if modified_since is not None else WATCH_FULL
    started_at = events.iso_utc(now)
    started = time.perf_counter()
    ctx.redis.hset(keys.WATCH_STATE, mapping={"last_attempt_at": started_at, "last_error": ""})
    start_local, _ = clinic_day(days[0], ctx.tz)
    _, end_local = clinic_day(days[-1], ctx.tz)
    rows = ctx.source.get_appointments(start_local, end_local, modified_since=modified_since)
    read_ended = datetime.now(UTC)
    by_day: dict[str, Sequence[dict[str, Any]]] = dict(split_horizon(rows, days))
    full = modified_since is None
    suspects: dict[str, day_reads.Suspect] = {}
    if full:  # a full read replaces each stored day: an empty day is checked before it is believed
        reread = HorizonReread(ctx, start_local, end_local, days)
        by_day, suspects = day_reads.screen_empty_days(
            ctx.redis,
            by_day,
            placeholders=getattr(rows, "placeholders", 0),
            refetch=reread.day,
            confirm_after=timedelta(minutes=ctx.settings.empty_confirm_minutes),
        )
    reads = [DayRead(day, by_day[day], full) for day in days if day in by_day and (full or by_day[day])]
    applied = ctx.reconciler.apply(
        reads,
        read_started_at=started_at,
        fetched={str(row["id"]) for row in rows},
        keep={row.id for row in getattr(rows, "rejected", ()) if row.id},  # set aside: stored copy stays
    )
    measured = clock.observe(
        ctx.redis,
        clock.bounds(read_ended, [(c.modified, c.old_seen) for c in applied.changes]),
    )
    duration_ms = round((time.perf_counter() - started) * 1000)
    changed_days = sorted(day for day, counts in applied.counts.items() if counts.changed_anything)
    for suspect in suspects.values():  # kept as they were: status suspect_empty, announced once
        day_reads.finish_suspect(
            ctx.suspect_context(),
            suspect,
            run_id,
            own_task=run_id,
            mode=mode,
            finished_at=events.utc_now_iso(),
        )
    pipe = ctx.redis.pipeline(transaction=False)
    for day in changed_days:
        announce_day(pipe, ctx.publisher, day, applied.counts[day], {"mode": mode, "task_id": run_id})
    for day in days:
        if day not in suspects:  # a suspect day's next read must be full again (the one that may confirm it)
            lifecycle.queue_watched(pipe, day, started_at=started_at, full=full)
    summary = {
        "run_id": run_id,
        "mode": mode,
        "rows": len(rows),
        "stale": applied.stale,
        "days": len(days),
        "changed_days": changed_days,
        "duration_ms": duration_ms,
        "clock": measured.as_dict(),
    }
    watch_state = {
        "cursor": started_at,
        "last_started_at": started_at,
        "last_finished_at": events.utc_now_iso(),
        "last_mode": mode,
        "last_rows": len(rows),
        "last_changed_days": len(changed_days),
        "last_duration_ms": duration_ms,
        "not_before": "",
    }
    if full:
        watch_state["last_full_started_at"] = started_at
    pipe.hset(keys.WATCH_STATE, mapping=watch_state)
    results.append(pipe, run_id, names.WATCH, lifecycle.SUCCEEDED, summary, ctx.settings.stream_maxlen)
    pipe.execute()
    log.info(
        "watch polled",
        extra={
            "mode": mode,
            "rows": len(rows),
            "changed_days": len(changed_days),
            "duration_ms": duration_ms,
        },
    )
    return summary


class HorizonReread:
    """The empty-``<Fields/>`` re-read a suspicious empty full read asks for, made once for the whole horizon
    (one call, whatever the number of days it has to check) and answered day by day."""

    def __init__(
        self, ctx: WatchContext, start_local: datetime, end_local: datetime, days: list[str]
    ) -> None:
        self._ctx, self._window, self._days = ctx, (start_local, end_local), days
        self._read: tuple[dict[str, list[dict[str, Any]]], int] | None = None

    def day(self, date: str) -> tuple[Sequence[dict[str, Any]], int]:
        if self._read is None:
            rows = self._ctx.source.get_appointments(*self._window, all_fields=True)  # type: ignore[call-arg]
            self._read = (split_horizon(rows, self._days), getattr(rows, "placeholders", 0))
        by_day, placeholders = self._read
        return by_day[date], placeholders


def split_horizon(rows: Sequence[dict[str, Any]], days: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The rows of each horizon day by the clinic-local date of their start (rows without a start, or
    starting outside the horizon, belong to no day the watch writes)."""
    by_day: dict[str, list[dict[str, Any]]] = {day: [] for day in days}
    for row in rows:
        start = row.get("start")
        if start and start[:10] in by_day:
            by_day[start[:10]].append(row)
    return by_day


def note_refused(client: redis.Redis, *, code: str, retry_after_s: float | None) -> None:
    """A poll Tebra or the breaker refused: say so, and when the next may try (the cursor stays put)."""
    fields = {"last_error": code}
    if retry_after_s is not None:
        fields["not_before"] = events.iso_utc(datetime.now(UTC) + timedelta(seconds=retry_after_s))
    client.hset(keys.WATCH_STATE, mapping=fields)
