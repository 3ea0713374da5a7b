"""Celery task shell for the periodic sync of today (beat, every PERIODIC_SYNC_MINUTES: workers/beat.py).

It asks for a sync exactly as ``POST /api/v1/schedule/sync`` does: the per-date lock (``sync_status.claim``)
first, so a sync of today already queued or running (from the API or an earlier beat) is reused, never
doubled; then the ``queued`` status and ``schedule.sync`` with a ULID task id on the ``sync`` queue.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from celery import Task, shared_task
from ulid import ULID

from tasks import events, sync_status
from tasks.celery_factory import SYNC_QUEUE
from tasks.runtime import get_runtime
from tasks.schedule import SYNC_TASK, task_settings

PERIODIC_TASK = "schedule.periodic_sync"


@shared_task(name=PERIODIC_TASK, bind=True, acks_late=True, ignore_result=True)
def periodic_sync(self: Task) -> dict[str, object]:
    """Queue a sync of today (clinic time) unless one is already queued or running."""
    settings = task_settings(self)
    client = get_runtime(settings).redis
    date = datetime.now(ZoneInfo(settings.clinic_tz)).date().isoformat()
    task_id, deduplicated = sync_status.claim(client, date, str(ULID()), settings.sync_lock_ttl_s)
    if deduplicated:
        return {"date": date, "task_id": task_id, "deduplicated": True}
    sync_status.record(
        client,
        date,
        task_id,
        settings.retention_days * 86400,
        state=sync_status.QUEUED,
        requested_at=events.utc_now_iso(),
        requested_by="beat",
        started_at="",
        finished_at="",
        duration_ms="",
        counts="",
        error="",
        attempt=0,
    )
    try:
        self.app.send_task(SYNC_TASK, args=[date], task_id=task_id, queue=SYNC_QUEUE)
    except Exception:
        sync_status.release(client, date, task_id)
        raise
    return {"date": date, "task_id": task_id, "deduplicated": False}
