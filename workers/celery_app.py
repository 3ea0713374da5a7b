"""The worker's entry point: ``celery -A workers.celery_app worker``.

Building the app reads settings (data, no I/O); connections open when the worker starts.
"""

from __future__ import annotations

from config import load_settings
from tasks.celery_factory import create_celery
from workers import signals
from workers.beat import beat_schedule

settings = load_settings()
app = create_celery(settings)
app.conf.beat_schedule = beat_schedule(settings)
app.set_default()
signals.connect()

__all__ = ["app"]
