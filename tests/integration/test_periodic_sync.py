"""Beat's periodic sync of today takes the same per-date lock as the API: it never doubles a sync that is
queued or running, and queues one when none is."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import redis

from config import Settings
from tasks import keys, names
from tasks.celery_factory import SYNC_QUEUE, create_celery
from tests.support.sync_state import wait_for_stored_state


def tick_returned(log: Path, task_id: str, timeout: float = 30) -> str:
    """What the worker logged that the tick ``task_id`` returned, once it has (the task keeps no result)."""
    prefix = f"Task {names.PERIODIC_SYNC}[{task_id}] succeeded"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").split("\n")[:-1]:  # complete lines only
            if prefix in line:
                return str(json.loads(line)["message"])
        time.sleep(0.05)
    raise AssertionError(f"the worker never finished the tick {task_id}")


def test_a_beat_tick_while_today_is_syncing_adds_nothing(
    worker: Any, simulator: Any, settings: Settings, redis_client: redis.Redis, logs_dir: Path
) -> None:
    today = datetime.now(ZoneInfo(settings.clinic_tz)).date().isoformat()
    celery = create_celery(settings)
    # Hold the first sync in its Tebra call long enough for the second tick, even on a loaded machine.
    simulator.set_faults(latency_ms=3000)
    try:
        celery.send_task(names.PERIODIC_SYNC, queue=SYNC_QUEUE)
        first = wait_for_stored_state(redis_client, today, "running")
        # A second tick while the first sync runs.
        tick = celery.send_task(names.PERIODIC_SYNC, queue=SYNC_QUEUE)
        assert "'deduplicated': True" in tick_returned(logs_dir / "worker.log", tick.id)
        assert redis_client.hget(keys.sync_status(today), "task_id") == first["task_id"]
        done = wait_for_stored_state(redis_client, today, "succeeded")
    finally:
        simulator.reset()
    assert done["task_id"] == first["task_id"] and done["requested_by"] == "beat"
    synced = [f for _, f in redis_client.xrange(keys.AGENT_UPDATES) if f["action"] == "schedule_synced"]
    assert len(synced) == 1

    celery.send_task(names.PERIODIC_SYNC, queue=SYNC_QUEUE)  # the next tick, with nothing running: a new sync
    deadline = time.monotonic() + 30
    while redis_client.hget(keys.sync_status(today), "task_id") == first["task_id"]:
        assert time.monotonic() < deadline, "the next tick queued nothing"
        time.sleep(0.05)
    wait_for_stored_state(redis_client, today, "succeeded")
