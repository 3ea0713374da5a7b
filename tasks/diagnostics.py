"""A no-op task: the floor the benchmarks measure the sync against (a bare Celery round trip on the same
broker), and a way for an operator to check the queue end to end without touching Tebra."""

from __future__ import annotations

from celery import shared_task

NOOP_TASK = "diagnostics.noop"


@shared_task(name=NOOP_TASK, acks_late=True)
def noop(value: int = 0) -> int:
    """Return ``value``: only the trip through the broker, a worker and the result backend."""
    return value
