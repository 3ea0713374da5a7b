"""Asking for a sync of one clinic day: the one path the API, beat and the drills all take.

Claim the date's lock (a sync already queued or running is reused: deduplicated) and record the day as
``queued``, in one round trip (one script, tasks/sync/lifecycle.py ``claim``), and send ``schedule.sync`` by
name with a ULID task id. If the broker refuses the message, the lock is released and the day recorded as
failed before the error goes up, so nothing is left claiming a sync that will never run.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery
from ulid import ULID

from config import Settings
from tasks import names
from tasks.celery_factory import SYNC_QUEUE
from tasks.sync import lifecycle


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
    task_id, deduplicated = lifecycle.claim(
        client, date, str(ULID()), lock_ttl_s=settings.sync_lock_ttl_s, status_ttl_s=status_ttl_s,
        requested_by=requested_by, force_full=full,
    )  # fmt: skip
    if deduplicated:
        return SyncRequest(task_id, True)
    try:
        send(celery, date, task_id)
    except Exception:
        lifecycle.broker_refused(client, date, task_id, status_ttl_s)
        raise
    return SyncRequest(task_id, False)


def send(celery: Celery, date: str, task_id: str) -> None:
    """Put ``schedule.sync`` of ``date`` on the broker under ``task_id`` (a request's, or the sweep's again).

    By name: the sender need not import the task body (it talks to Tebra). ignore_result: schedule.sync
    stores no result, so the sender need not subscribe to its result channel (Celery's Redis backend does,
    and unsubscribes when the AsyncResult is collected: two commands on a pub/sub connection for every
    request, for nothing).
    """
    celery.send_task(names.SYNC, args=[date], task_id=task_id, queue=SYNC_QUEUE, ignore_result=True)
