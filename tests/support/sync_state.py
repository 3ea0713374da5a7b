"""Waiting on a day's stored sync status, as the worker writes it (``sync:status:{date}`` in Redis)."""

from __future__ import annotations

import time
from typing import Any

import redis

from tasks.sync.status import read_status


def wait_for_stored_state(client: redis.Redis, date: str, state: str, timeout: float = 30) -> dict[str, Any]:
    """The day's status once its state is ``state`` (read with tasks/sync/status.py ``read_status``); fails
    after ``timeout`` seconds showing the last status seen."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        status = read_status(client, date)
        if status and status.get("state") == state:
            return status
        time.sleep(0.05)
    raise AssertionError(f"sync of {date} never reached {state}: {status}")
