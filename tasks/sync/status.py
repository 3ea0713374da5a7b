"""Reading what tasks/sync/lifecycle.py wrote: a day's last sync (``sync:status:{date}``) and one task's
record (``task:{id}``), as ``GET /api/v1/schedule/status/{date}`` and ``GET /api/v1/tasks/{id}`` answer
them. Dates, ids, states and counts: no PHI."""

from __future__ import annotations

import json
from typing import Any

import redis

from tasks import keys


def read_status(client: redis.Redis, date: str) -> dict[str, Any] | None:
    """The last sync of ``date``, or None if there was none."""
    return _parse(client.hgetall(keys.sync_status(date)))


def read_task(client: redis.Redis, task_id: str) -> dict[str, Any] | None:
    """What is known of one task, or None."""
    return _parse(client.hgetall(keys.task_meta(task_id)))


_INT_FIELDS = frozenset(
    {
        "duration_ms",
        "attempt",
        "retry_in_s",
        "deferrals",
        "redeliveries",
        "resends",
        "rows_rejected",
        "suspect_empty_kept",
    }
)


def _parse(raw: dict[str, str]) -> dict[str, Any] | None:
    if not raw:
        return None
    parsed: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "counts" and value:
            parsed[name] = json.loads(value)
        elif name in _INT_FIELDS and value:
            parsed[name] = int(value)
        else:
            parsed[name] = value or None
    return parsed
