"""The sync's Celery task shells: unpack primitives, call one plain function, apply the one retry policy
(tasks/retry.py, through tasks/job.py). Arguments and results are dates, ids and counts: Flower and the broker
show them.

- ``schedule.sync``: one clinic day (tasks/sync/run.py ``sync_day``).
- ``schedule.watch``: beat's tick of the watch (tasks/sync/watch.py).
- ``schedule.periodic_sync``: beat's sync of today, every PERIODIC_SYNC_MINUTES (off by default now that the
  watch exists), asked for exactly as ``POST /api/v1/schedule/sync`` asks (tasks/sync/request.py): a sync of
  today already queued or running is reused, never doubled.
- ``schedule.sweep``: beat's sweep, every SYNC_SWEEP_INTERVAL_S, for accepted syncs whose message the broker
  lost (tasks/sync/sweep.py).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import redis
from celery import Task, shared_task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from kombu.exceptions import OperationalError

from config import Settings
from tasks import broker_transport, names
from tasks.breaker.errors import BreakerOpen
from tasks.celery_factory import SYNC_QUEUE
from tasks.job import attempt_of, conclude, task_settings
from tasks.retry import Limits
from tasks.runtime import get_runtime
from tasks.sync import sweep, watch
from tasks.sync.request import request_sync, send
from tasks.sync.run import sync_day
from tasks.tebra.credentials import CredentialsRefused
from tasks.tebra.errors import TebraError

log = logging.getLogger(__name__)


def sync_limits(settings: Settings) -> Limits:
    """A day's sync: TASK_MAX_RETRIES outage retries; it waits with an open breaker as long as it takes."""
    return Limits(settings.task_max_retries, settings.breaker_open_s, settings.retry_backoff_max_s)


@shared_task(
    name=names.SYNC,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # the retry policy decides, per failure class
    # Its outcome is recorded where the product reads it: sync:status:{date}, task:{id} (GET /tasks/{id})
    # and the task_results stream; Flower learns it from task events. A copy in Celery's result backend
    # (a GET and a SET per task) was read by nothing and cost a sixth of a sync's worker time.
    ignore_result=True,
)
def sync_schedule(self: Task, date: str, deferrals: int = 0) -> dict[str, Any]:
    """Sync one clinic day (YYYY-MM-DD) from Tebra into Redis and announce ``schedule_synced``.

    ``deferrals`` counts the times an open breaker sent it back: those are not attempts (no retry budget).
    """
    settings = task_settings(self)
    try:
        outcome = sync_day(
            get_runtime(settings).sync_context(), self.app, date, str(self.request.id),
            attempt=attempt_of(self, deferrals), deferrals=deferrals, limits=sync_limits(settings),
        )  # fmt: skip
    except (redis.ConnectionError, redis.TimeoutError, OperationalError) as exc:
        # Redis (the data and the broker) went away mid-sync. Failing would acknowledge the message and
        # lose an accepted sync; rejecting it with requeue puts it back (or, with the broker down too, leaves
        # it unacknowledged for the restore sweep after the visibility timeout). Syncs are idempotent.
        log.warning("sync interrupted by a redis outage; requeued", extra={"date": date, "code": "REDIS"})
        raise Reject(type(exc).__name__, requeue=True) from None
    result: dict[str, Any] = conclude(self, outcome, deferrals)
    return result


@shared_task(name=names.WATCH, bind=True, acks_late=True, ignore_result=True)
def watch_tebra(self: Task, force: bool = False, full: bool = False) -> dict[str, Any]:
    """One beat tick of the watch: poll Tebra for the horizon's changes when a poll is due.

    No Celery retries: the next tick is the retry, and the cursor moves only when a poll succeeded, so a
    refused or failed poll loses nothing (the next one reads from the same cursor).
    """
    runtime = get_runtime(task_settings(self))
    try:
        return watch.run_watch(runtime.watch_context(), force=force, force_full=full)
    except BreakerOpen as exc:  # an open breaker, or the credentials latch (CredentialsRefused): pause
        code = str(getattr(exc, "code", "CIRCUIT_OPEN"))
        log.info("watch deferred", extra={"code": code, "retry_in_s": exc.retry_after_s})
        # The latch is one Redis read per tick, and an operator's resume should be followed at once: no wait.
        retry = None if isinstance(exc, CredentialsRefused) else exc.retry_after_s
        watch.note_refused(runtime.redis, code=code, retry_after_s=retry)
        return {"deferred": code}
    except TebraError as exc:
        log.warning("watch poll failed; the next tick catches up", extra={"code": exc.outcome})
        watch.note_refused(runtime.redis, code=f"TEBRA_{exc.outcome.upper()}", retry_after_s=None)
        return {"failed": exc.outcome}
    except (SoftTimeLimitExceeded, redis.RedisError) as exc:
        log.warning("watch poll interrupted; the next tick catches up", extra={"error": type(exc).__name__})
        return {"failed": type(exc).__name__}


@shared_task(name=names.PERIODIC_SYNC, bind=True, acks_late=True, ignore_result=True)
def periodic_sync(self: Task) -> dict[str, object]:
    """Queue a sync of today (clinic time) unless one is already queued or running."""
    settings = task_settings(self)
    client = get_runtime(settings).redis
    date = datetime.now(ZoneInfo(settings.clinic_tz)).date().isoformat()
    sent = request_sync(client, self.app, settings, date, requested_by="beat")
    return {"date": date, "task_id": sent.task_id, "deduplicated": sent.deduplicated}


@shared_task(name=names.SWEEP, bind=True, acks_late=True, ignore_result=True)
def sweep_syncs(self: Task) -> dict[str, object]:
    """Send again the accepted syncs whose message the broker no longer holds (two sweeps apart).

    No retries: the next tick is the retry. Redis down is a skipped sweep, not an error worth a trace.
    """
    settings = task_settings(self)
    client = get_runtime(settings).redis
    interval_s = settings.sync_sweep_interval_s
    if interval_s <= 0:  # sent by hand with the sweep off: its two sightings need an interval between them
        return {"skipped": "SYNC_SWEEP_INTERVAL_S is 0"}
    try:
        if not sweep.take_turn(client, interval_s):
            return {"skipped": "another sweep"}
        report = sweep.sweep(
            client,
            lambda: broker_transport.held_task_ids(self.app, SYNC_QUEUE),
            lambda date, task_id: send(self.app, date, task_id),
            interval_s=interval_s,
            running_limit_s=settings.task_time_limit_s,
        )
    except (redis.RedisError, OperationalError) as exc:
        log.warning("sync sweep skipped; the next one looks again", extra={"error": type(exc).__name__})
        return {"failed": type(exc).__name__}
    return report.as_dict()
