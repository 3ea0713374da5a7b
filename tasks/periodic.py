"""Celery task shells for beat's periodic work (workers/beat.py): the watch, which keeps every day of the
horizon in step with Tebra (tasks/watch.py), and the optional periodic sync of today.

The periodic sync of today (every PERIODIC_SYNC_MINUTES, off by default now that the watch exists):
It asks for a sync exactly as ``POST /api/v1/schedule/sync`` does (tasks/sync_request.py): the per-date lock
and the ``queued`` status in one script, so a sync of today already queued or running (from the API or an
earlier beat) is reused, never doubled; then ``schedule.sync`` with a ULID task id on the ``sync`` queue.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import redis
from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from tasks import watch
from tasks.breaker.errors import BreakerOpen
from tasks.runtime import get_runtime
from tasks.schedule import task_settings
from tasks.sync_request import request_sync
from tasks.tebra.credentials import CredentialsRefused
from tasks.tebra.errors import TebraError

log = logging.getLogger(__name__)

PERIODIC_TASK = "schedule.periodic_sync"


@shared_task(name=watch.WATCH_TASK, bind=True, acks_late=True, ignore_result=True)
def watch_tebra(self: Task, force: bool = False, full: bool = False) -> dict[str, Any]:
    """One beat tick of the watch: poll Tebra for the horizon's changes when a poll is due.

    No Celery retries: the next tick is the retry, and the cursor moves only when a poll succeeded, so a
    refused or failed poll loses nothing (the next one reads from the same cursor).
    """
    settings = task_settings(self)
    runtime = get_runtime(settings)
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


@shared_task(name=PERIODIC_TASK, bind=True, acks_late=True, ignore_result=True)
def periodic_sync(self: Task) -> dict[str, object]:
    """Queue a sync of today (clinic time) unless one is already queued or running."""
    settings = task_settings(self)
    client = get_runtime(settings).redis
    date = datetime.now(ZoneInfo(settings.clinic_tz)).date().isoformat()
    sent = request_sync(client, self.app, settings, date, requested_by="beat")
    return {"date": date, "task_id": sent.task_id, "deduplicated": sent.deduplicated}
