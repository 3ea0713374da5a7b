"""The beat schedule: a sync of today every PERIODIC_SYNC_MINUTES (0: none). ``make beat`` runs it.

The entry only queues ``schedule.periodic_sync``, which goes through the same per-date lock as the API
(tasks/periodic.py): a beat tick while a sync of today is queued or running adds nothing. A tick that waited
longer than one period in the queue is dropped (``expires``): the next one is as good.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from config import Settings
from tasks.celery_factory import SYNC_QUEUE

PERIODIC_TASK = "schedule.periodic_sync"  # by name, as tasks/periodic.py registers it


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Celery's ``beat_schedule`` for ``settings`` (empty when periodic syncs are off)."""
    minutes = settings.periodic_sync_minutes
    if minutes <= 0:
        return {}
    return {
        "sync-today": {
            "task": PERIODIC_TASK,
            "schedule": timedelta(minutes=minutes),
            "options": {"queue": SYNC_QUEUE, "expires": minutes * 60},
        }
    }
