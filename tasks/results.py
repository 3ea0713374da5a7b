"""The ``task_results`` stream: one entry per finished task (its id, action, outcome and a summary of dates,
ids and counts, no PHI), capped with ``MAXLEN ~``. Written by the sync's lifecycle and the watch."""

from __future__ import annotations

import json
from typing import Any

import redis
from redis.client import Pipeline

from tasks import keys


def append(
    client: redis.Redis | Pipeline,
    task_id: str,
    action: str,
    status: str,
    summary: dict[str, Any],
    maxlen: int,
) -> None:
    """One entry on ``task_results`` per finished task (sent now, or queued when ``client`` is a pipeline)."""
    client.xadd(
        keys.TASK_RESULTS,
        {
            "task_id": task_id,
            "action": action,
            "status": status,
            "summary": json.dumps(summary, sort_keys=True),
        },
        maxlen=maxlen,
        approximate=True,
    )
