"""Where the Tebra check's report is kept: the last one, for ``GET /api/v1/ops/tebra`` (docs/tebra.md,
"Checking a clinic's Tebra account"). The check itself runs on a worker or from ``make check-tebra``
(tasks/tebra/check.py); the report holds names, counts and limits, never patient data."""

from __future__ import annotations

import json
from typing import Any

import redis
from celery import Celery

from tasks import keys, names
from tasks.celery_factory import SYNC_QUEUE

REPORT_TTL_S = 30 * 86400


def request_check(celery: Celery) -> str:
    """Send the check to a worker (the API never calls Tebra); answers the task id."""
    return str(celery.send_task(names.CHECK_TEBRA, queue=SYNC_QUEUE, ignore_result=True).id)


def store_report(client: redis.Redis, report: dict[str, Any]) -> None:
    """Keep ``report`` as the last check's."""
    client.set(keys.TEBRA_CHECK, json.dumps(report, sort_keys=True), ex=REPORT_TTL_S)


def last_report(client: redis.Redis) -> dict[str, Any] | None:
    """The last check's report, or None."""
    raw = client.get(keys.TEBRA_CHECK)
    return json.loads(raw) if raw else None
