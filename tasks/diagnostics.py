"""A no-op task: the floor the benchmarks measure the sync against (a bare Celery round trip on the same
broker), and a way for an operator to check the queue end to end without touching Tebra; and the Tebra
check (``POST /api/v1/ops/tebra {"action": "check"}``), run on a worker."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from tasks import names


@shared_task(name=names.NOOP, acks_late=True)
def noop(value: int = 0) -> int:
    """Return ``value``: only the trip through the broker, a worker and the result backend."""
    return value


@shared_task(name=names.CHECK_TEBRA, bind=True, acks_late=True, ignore_result=True)
def check_tebra(self: Task) -> dict[str, Any]:
    """The Tebra check (tasks/tebra/check.py); its report is kept for ``GET /api/v1/ops/tebra``."""
    from tasks.job import task_settings
    from tasks.tebra.check import check_and_keep

    report: dict[str, Any] = check_and_keep(task_settings(self))
    return report
