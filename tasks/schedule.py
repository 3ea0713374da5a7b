"""Celery task shells for the schedule: unpack primitives, call one plain function, turn failures into a
retry or a terminal status. Arguments and results are dates, ids and counts: Flower and the broker show them.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import redis
from celery import Task, shared_task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from kombu.exceptions import OperationalError

from config import Settings, load_settings
from tasks import events, sync_status
from tasks.breaker.errors import BreakerOpen
from tasks.patient_details import queue_lookups
from tasks.runtime import get_runtime
from tasks.sync import begin, run_sync
from tasks.tebra.credentials import credentials_refused
from tasks.tebra.errors import (
    TebraBusinessError,
    TebraError,
    TebraSecurityError,
    TebraThrottled,
    TebraUpstreamError,
)

log = logging.getLogger(__name__)

SYNC_TASK = "schedule.sync"
Days = tuple[tuple[str, str], ...]  # (date, the id of the task the day is run for), the own day first
THROTTLE_RETRY_LIMIT = 30  # throttling is pacing, not an outage: it may take many turns, but not forever


def task_settings(task: Task) -> Settings:
    """The settings the Celery app was built with (a bare app falls back to the environment)."""
    settings = getattr(task.app.conf, "clinic_settings", None)
    return settings if isinstance(settings, Settings) else load_settings()


def backoff_s(attempt: int, cap_s: int) -> float:
    """Exponential backoff with full jitter: spreads retries of many tasks over the window."""
    return random.uniform(1.0, min(cap_s, 2.0 * (2**attempt)))


@shared_task(
    name=SYNC_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # the retry policy below decides, per failure class
    # Its outcome is recorded where the product reads it: sync:status:{date}, task:{id} (GET /tasks/{id})
    # and the task_results stream; Flower learns it from task events. A copy in Celery's result backend
    # (a GET and a SET per task) was read by nothing and cost a sixth of a sync's worker time.
    ignore_result=True,
)
def sync_schedule(self: Task, date: str, deferrals: int = 0) -> dict[str, Any]:
    """Sync one clinic day (YYYY-MM-DD) from Tebra into Redis and announce ``schedule_synced``.

    ``deferrals`` counts the times an open breaker sent it back: those are not attempts (no retry budget).
    """
    try:
        return _sync(self, date, deferrals)
    except (redis.ConnectionError, redis.TimeoutError, OperationalError) as exc:
        # Redis (the data and the broker) went away mid-sync. Failing would acknowledge the message and
        # lose an accepted sync; rejecting it with requeue puts it back (or, with the broker down too, leaves
        # it unacknowledged for the restore sweep after the visibility timeout). Syncs are idempotent.
        log.warning("sync interrupted by a redis outage; requeued", extra={"date": date, "code": "REDIS"})
        raise Reject(type(exc).__name__, requeue=True) from None


def _sync(self: Task, date: str, deferrals: int) -> dict[str, Any]:
    settings = task_settings(self)
    runtime = get_runtime(settings)
    ctx = runtime.sync_context()
    task_id = str(self.request.id)
    attempt = max(0, int(self.request.retries) - deferrals)
    begun = begin(ctx, date, task_id, attempt=attempt)  # one script: the redelivery check, the plan, the days
    if isinstance(begun, sync_status.Start):  # refused: another task runs this day, or this one finished it
        return _not_run(ctx, date, task_id, begun)
    days = begun.days
    _drop_taken_messages(self, days[1:])
    try:
        summary = run_sync(ctx, begun)
    except (BreakerOpen, TebraSecurityError) as exc:
        # Not a failure: Tebra is being spared (an open breaker), or our credentials were refused (the latch,
        # set by this refusal or an earlier one, holds every call until an operator resumes). Come back when
        # a call may go out; nothing is lost meanwhile.
        refusal = exc if isinstance(exc, BreakerOpen) else credentials_refused(exc)
        wait = settings.breaker_open_s if refusal.retry_after_s is None else refusal.retry_after_s
        countdown = wait + random.uniform(0.05, 0.5)
        _deferred(ctx, days, settings, refusal, countdown, deferrals)
        raise self.retry(exc=refusal, countdown=countdown, kwargs={"deferrals": deferrals + 1}) from None
    except TebraThrottled as exc:
        if attempt >= THROTTLE_RETRY_LIMIT:
            _fail(ctx, days, settings, "TEBRA_THROTTLED", exc)
            raise
        countdown = exc.retry_after_s + random.uniform(0.05, 0.5)
        _retrying(ctx, days, settings, "TEBRA_THROTTLED", countdown, attempt)
        raise self.retry(exc=exc, countdown=countdown) from None
    except (TebraUpstreamError, SoftTimeLimitExceeded) as exc:
        code = "TEBRA_UPSTREAM" if isinstance(exc, TebraUpstreamError) else "TIME_LIMIT"
        if attempt >= settings.task_max_retries:
            _fail(ctx, days, settings, code, exc)
            raise
        countdown = backoff_s(attempt, settings.retry_backoff_max_s)
        _retrying(ctx, days, settings, code, countdown, attempt)
        raise self.retry(exc=exc, countdown=countdown) from None
    except TebraBusinessError as exc:
        _fail(ctx, days, settings, "TEBRA_ERROR", exc)
        raise
    except TebraError as exc:
        _fail(ctx, days, settings, "TEBRA_ERROR", exc)
        raise
    # After schedule_synced is out, never before: the board needs nothing from these to show the day.
    for day, _ in days:
        queue_lookups(self.app, settings, runtime.redis, runtime.store, day)
    return summary


def _drop_taken_messages(task: Task, taken: Days) -> None:
    """Revoke the messages of the days this task took, so that a worker drops each in its main process
    (acknowledged, a ``task-revoked`` event) instead of handing it to a pool process only to learn from the
    start script that the day is taken: that was a whole task's cost for each of them (docs/tebra.md,
    "Coalesced syncs"). Only a shortcut: a worker that misses the broadcast (not yet started, or restarted:
    revokes live in its memory) still runs the message, and the start script acknowledges it as taken."""
    if not taken:
        return
    try:
        task.app.control.revoke([task_id for _, task_id in taken])
    except Exception as exc:  # the broadcast is an optimisation: the sync goes on without it
        log.warning("taken days' messages not revoked", extra={"error": type(exc).__name__})


def _not_run(ctx: Any, date: str, task_id: str, start: sync_status.Start) -> dict[str, Any]:
    """The result of a task whose day another task runs (``run_by``), or which finished it already."""
    if start.outcome == sync_status.TAKEN:
        # The other task announces this day with this task's id and releases its lock; if it dies, its own
        # redelivery takes the day again (the start script), so acknowledging this message loses nothing.
        log.info(
            "sync run by another task's fetch", extra={"date": date, "task_id": task_id, "run_by": start.by}
        )
        return {"date": date, "task_id": task_id, "run_by": start.by}
    # Done: at-least-once delivery handed back a finished sync (its worker died after the work but before
    # the acknowledgement, or the broker connection dropped in between: tasks/broker_transport.py). Running
    # it again would change no data, but would announce it twice; this makes it once in effect.
    status = sync_status.read_status(ctx.redis, date) or {}
    log.info("sync already done; redelivery acknowledged", extra={"date": date, "task_id": task_id})
    sync_status.note_redelivery(ctx.redis, task_id)  # GET /tasks/{id} shows it came back and was let go
    sync_status.release(ctx.redis, date, task_id)
    return {"date": date, "task_id": task_id, "state": status.get("state"),
            "counts": status.get("counts") or {}, "duration_ms": status.get("duration_ms"),
            "redelivered": True}  # fmt: skip


def _deferred(
    ctx: Any, days: Days, settings: Settings, exc: BreakerOpen, countdown: float, deferrals: int
) -> None:
    for date, task_id in days:
        _deferred_day(ctx, date, task_id, settings, exc, countdown, deferrals)


def _deferred_day(
    ctx: Any, date: str, task_id: str, settings: Settings, exc: BreakerOpen, countdown: float, deferrals: int
) -> None:
    """``sync:status:{date}`` says ``deferred`` and ``schedule_sync_deferred`` says when it tries again (and
    why: ``CIRCUIT_OPEN``, or ``TEBRA_CREDENTIALS_REFUSED`` while the credentials latch holds)."""
    breaker = {"state": exc.state, "reason": exc.reason or None}
    code = getattr(exc, "code", "CIRCUIT_OPEN")
    log.info(
        "sync deferred: tebra not called",
        extra={
            "date": date,
            "task_id": task_id,
            "code": code,
            "retry_in_s": round(countdown, 2),
            "breaker": breaker,
        },
    )
    try:
        sync_status.record(
            ctx.redis,
            date,
            task_id,
            settings.retention_days * 86400,
            state=sync_status.DEFERRED,
            error=code,
            **_refusal_message(exc),
            retry_in_s=round(countdown),
            deferrals=deferrals + 1,
        )
        sync_status.extend(ctx.redis, date, task_id, settings.sync_lock_ttl_s + round(countdown))
        data = {
            "date": date,
            "task_id": task_id,
            "retry_in_s": round(countdown, 3),
            "deferrals": deferrals + 1,
            "breaker": breaker,
            "code": code,
        }
        ctx.publisher.publish(events.SCHEDULE_SYNC_DEFERRED, data)
    except redis.RedisError as err:  # Redis down is why the breaker refused: the retry still goes out
        log.error("deferral not recorded: %s", type(err).__name__)


def _refusal_message(exc: BreakerOpen) -> dict[str, str]:
    """A credentials deferral's status says why Tebra is not called, in Tebra's words (no PHI in them)."""
    return {"error_message": str(exc)[:400]} if getattr(exc, "code", None) else {}


def _retrying(ctx: Any, days: Days, settings: Settings, code: str, countdown: float, attempt: int) -> None:
    for date, task_id in days:
        _retrying_day(ctx, date, task_id, settings, code, countdown, attempt)


def _retrying_day(
    ctx: Any, date: str, task_id: str, settings: Settings, code: str, countdown: float, attempt: int
) -> None:
    log.warning(
        "sync retrying",
        extra={
            "date": date,
            "task_id": task_id,
            "code": code,
            "retry_in_s": round(countdown, 2),
            "attempt": attempt,
        },
    )
    sync_status.record(
        ctx.redis,
        date,
        task_id,
        settings.retention_days * 86400,
        state=sync_status.RETRYING,
        error=code,
        retry_in_s=round(countdown),
    )
    sync_status.extend(ctx.redis, date, task_id, settings.sync_lock_ttl_s + round(countdown))


def _fail(ctx: Any, days: Days, settings: Settings, code: str, exc: BaseException) -> None:
    """Every day of the fetch failed with it: each its own status, event, result entry, lock released."""
    for date, task_id in days:
        _fail_day(ctx, date, task_id, settings, code, exc)


def _fail_day(ctx: Any, date: str, task_id: str, settings: Settings, code: str, exc: BaseException) -> None:
    """Terminal failure: status, event, result entry, lock released. The message carries no PHI."""
    message = _safe_message(exc)
    log.error("sync failed", extra={"date": date, "task_id": task_id, "code": code})
    sync_status.record(
        ctx.redis,
        date,
        task_id,
        settings.retention_days * 86400,
        state=sync_status.FAILED,
        finished_at=events.utc_now_iso(),
        error=code,
        error_message=message,
    )
    data = {"date": date, "task_id": task_id, "error": {"code": code, "message": message}}
    ctx.publisher.publish(events.SCHEDULE_SYNC_FAILED, data)
    sync_status.append_result(ctx.redis, task_id, SYNC_TASK, sync_status.FAILED, data, settings.stream_maxlen)
    sync_status.release(ctx.redis, date, task_id)


def _safe_message(exc: BaseException) -> str:
    """Gateway errors carry curated, PHI-free messages; anything else is named by its class only."""
    if isinstance(exc, TebraError):
        return str(exc)[:300]
    return type(exc).__name__
