"""Beat's periodic sync of today takes the same per-date lock as the API: it never doubles a sync that is
queued or running, and queues one when none is."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import redis

from config import Settings
from tasks import keys, names
from tasks.celery_factory import SYNC_QUEUE, create_celery
from tests.support.sync_state import wait_for_stored_state


def test_a_beat_tick_while_today_is_syncing_adds_nothing(
    worker: Any, simulator: Any, settings: Settings, redis_client: redis.Redis
) -> None:
    today = datetime.now(ZoneInfo(settings.clinic_tz)).date().isoformat()
    celery = create_celery(settings)
    simulator.set_faults(latency_ms=1500)  # hold the first sync in its Tebra call
    try:
        celery.send_task(names.PERIODIC_SYNC, queue=SYNC_QUEUE)
        first = wait_for_stored_state(redis_client, today, "running")
        celery.send_task(names.PERIODIC_SYNC, queue=SYNC_QUEUE)  # a second tick while the first sync runs
        time.sleep(0.5)
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
