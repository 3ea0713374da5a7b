"""The beat schedule (``make beat``; ``make run`` runs beat): the watch's tick, and the optional periodic sync
of today.

- ``watch-tebra``: ``schedule.watch`` every few seconds (tasks/sync/watch.py, ``tick_s``). A tick polls Tebra
  only when a poll is due (TEBRA_POLL_INTERVAL_S inside CLINIC_HOURS, TEBRA_POLL_INTERVAL_OFF_HOURS_S outside)
  and only when no other poll runs (a Redis lease): two beats, or a tick during a slow poll, add nothing.
  TEBRA_POLL_INTERVAL_S=0 leaves it out.
- ``sweep-syncs``: ``schedule.sweep`` every SYNC_SWEEP_INTERVAL_S (60; 0 leaves it out): an accepted sync
  whose broker message was lost (a worker or Redis gone between a message's pop and its unacknowledged
  record) is sent again (tasks/sync/sweep.py).
- ``sync-today``: every PERIODIC_SYNC_MINUTES (0, the default: none), a sync of today through the same
  per-date lock as the API (tasks/sync/job.py).

A tick that waited longer than one period in the queue is dropped (``expires``): the next one is as good.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from config import Settings
from tasks import names
from tasks.celery_factory import SYNC_QUEUE
from tasks.sync.watch import tick_s


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Celery's ``beat_schedule`` for ``settings``."""
    schedule: dict[str, dict[str, Any]] = {}
    if settings.tebra_poll_interval_s > 0:
        tick = tick_s(settings)
        schedule["watch-tebra"] = {
            "task": names.WATCH,
            "schedule": timedelta(seconds=tick),
            "options": {"queue": SYNC_QUEUE, "expires": tick},
        }
    if settings.sync_sweep_interval_s > 0:
        schedule["sweep-syncs"] = {
            "task": names.SWEEP,
            "schedule": timedelta(seconds=settings.sync_sweep_interval_s),
            "options": {"queue": SYNC_QUEUE, "expires": settings.sync_sweep_interval_s},
        }
    minutes = settings.periodic_sync_minutes
    if minutes > 0:
        schedule["sync-today"] = {
            "task": names.PERIODIC_SYNC,
            "schedule": timedelta(minutes=minutes),
            "options": {"queue": SYNC_QUEUE, "expires": minutes * 60},
        }
    return schedule
