"""Celery task shell for the periodic sync of today (beat, every PERIODIC_SYNC_MINUTES: workers/beat.py).

It asks for a sync exactly as ``POST /api/v1/schedule/sync`` does (tasks/sync_request.py): the per-date lock
and the ``queued`` status in one script, so a sync of today already queued or running (from the API or an
earlier beat) is reused, never doubled; then ``schedule.sync`` with a ULID task id on the ``sync`` queue.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from celery import Task, shared_task

from tasks.runtime import get_runtime
from tasks.schedule import task_settings
from tasks.sync_request import request_sync

PERIODIC_TASK = "schedule.periodic_sync"


@shared_task(name=PERIODIC_TASK, bind=True, acks_late=True, ignore_result=True)
def periodic_sync(self: Task) -> dict[str, object]:
    """Queue a sync of today (clinic time) unless one is already queued or running."""
    settings = task_settings(self)
    client = get_runtime(settings).redis
    date = datetime.now(ZoneInfo(settings.clinic_tz)).date().isoformat()
    sent = request_sync(client, self.app, settings, date, requested_by="beat")
    return {"date": date, "task_id": sent.task_id, "deduplicated": sent.deduplicated}
