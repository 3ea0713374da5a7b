"""Asking for a sync of one clinic day: the one path the API, beat and the drills all take.

Claim the date's lock (a sync already queued or running is reused: deduplicated) and record the day as
``queued``, in one round trip (one script), and send ``schedule.sync`` by name with a ULID task id. If the
broker refuses the message, the lock is released and the day recorded as failed before the error goes up, so
nothing is left claiming a sync that will never run.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery
from ulid import ULID

from config import Settings
from tasks import events, sync_status
from tasks.celery_factory import SYNC_QUEUE

SYNC_TASK = "schedule.sync"  # by name: callers need not import the task body (it talks to Tebra)


@dataclass(frozen=True)
class SyncRequest:
    task_id: str
    deduplicated: bool


def request_sync(
    client: redis.Redis,
    celery: Celery,
    settings: Settings,
    date: str,
    *,
    requested_by: str,
    full: bool = False,
) -> SyncRequest:
    """Queue a sync of ``date`` unless one is queued or running; raises what the broker raised. ``full``
    (``mode=full``): read the whole day from Tebra whatever the last full read was (deletions included)."""
    status_ttl_s = settings.retention_days * 86400
    task_id, deduplicated = sync_status.claim_queued(
        client, date, str(ULID()), settings.sync_lock_ttl_s, status_ttl_s, force_full=full,
        state=sync_status.QUEUED, requested_at=events.utc_now_iso(), requested_by=requested_by,
        started_at="", finished_at="", duration_ms="", counts="", error="", attempt=0,
    )  # fmt: skip
    if deduplicated:
        return SyncRequest(task_id, True)
    try:
        # ignore_result: schedule.sync stores no result (tasks/schedule.py), so the sender need not subscribe
        # to its result channel (Celery's Redis backend does, and unsubscribes when the AsyncResult is
        # collected: two commands on a pub/sub connection for every request, for nothing).
        celery.send_task(SYNC_TASK, args=[date], task_id=task_id, queue=SYNC_QUEUE, ignore_result=True)
    except Exception:
        sync_status.release(client, date, task_id)
        sync_status.record(
            client, date, task_id, status_ttl_s, state=sync_status.FAILED, error="BROKER_UNAVAILABLE"
        )
        raise
    return SyncRequest(task_id, False)
