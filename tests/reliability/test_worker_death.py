"""Fault drills: a worker dies in the middle of a sync, and the sync still completes exactly once in effect.

Each drill runs its own prefork worker (the session's shared one must not be killed) on the same broker,
with the simulator slowed so the kill lands during the Tebra call.

Promise: a sync accepted by the API is never lost to a worker crash. A dead pool child is noticed at once
(reject_on_worker_lost requeues the message); a dead worker is noticed by the broker only after the
visibility timeout, because nothing else can tell a dead consumer from a slow one. These drills run with a
15 s visibility timeout; production uses BROKER_VISIBILITY_TIMEOUT_S (900 s, docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from config import load_settings
from tasks import keys
from tasks.celery_factory import create_celery
from tasks.sync.request import request_sync
from tests.conftest import TEST_DRILL_BROKER_URL
from tests.support.processes import children_of, stop
from tests.support.processes import start_worker as start_celery_worker
from tests.support.sync_state import wait_for_stored_state

# The drills' own broker database: the session's shared worker must not take their tasks.
DRILL_BROKER_URL = TEST_DRILL_BROKER_URL

# Each drill waits out a slow Tebra call, a kill and a recovery: under xdist each is a unit of its own.
pytestmark = pytest.mark.slow(seconds=27)

DRILL_ENV = {
    "TASK_SOFT_TIME_LIMIT_S": "8",
    "TASK_TIME_LIMIT_S": "10",
    "RETRY_BACKOFF_MAX_S": "2",
    "BROKER_VISIBILITY_TIMEOUT_S": "15",
    "CELERY_BROKER_URL": DRILL_BROKER_URL,
    "CELERY_RESULT_BACKEND": DRILL_BROKER_URL,
}
SLOW_TEBRA_MS = 4000


def start_worker(env: dict[str, str], log: Path, name: str) -> Any:
    """One pool process on the sync queue: the drills kill it and know which sync it holds."""
    return start_celery_worker(env, log, name=name, concurrency=1, queues="sync")


def synced_events(client: redis.Redis, task_id: str) -> list[dict[str, Any]]:
    entries = client.xrange(keys.AGENT_UPDATES)
    return [
        json.loads(f["payload"])
        for _, f in entries
        if f["action"] == "schedule_synced" and json.loads(f["payload"]).get("task_id") == task_id
    ]


@pytest.fixture
def drill_env(stack_env: dict[str, str], simulator: Any) -> Iterator[dict[str, str]]:
    """The stack's environment with short time limits and visibility timeout; the simulator slowed."""
    redis.Redis.from_url(DRILL_BROKER_URL).flushdb()
    simulator.set_faults(latency_ms=SLOW_TEBRA_MS)
    yield {**stack_env, **DRILL_ENV}
    simulator.reset()


def enqueue(env: dict[str, str], client: redis.Redis, date: str) -> str:
    """Queue a sync the way the API does (tasks/sync/request.py), on the drills' broker."""
    settings = load_settings(env)
    sent = request_sync(client, create_celery(settings), settings, date, requested_by="drill")
    assert not sent.deduplicated
    return sent.task_id


def test_killed_pool_child_is_requeued_and_syncs_once(
    drill_env: dict[str, str], simulator: Any, redis_client: redis.Redis, logs_dir: Path
) -> None:
    date = "2026-12-01"
    worker = start_worker(drill_env, logs_dir / "drill-child.log", "drill-child")
    try:
        task_id = enqueue(drill_env, redis_client, date)
        wait_for_stored_state(redis_client, date, "running", 20)
        time.sleep(0.5)  # inside the slow GetAppointments call
        # Tebra fast again before the kill: the requeued sync can reach it within milliseconds of it.
        simulator.set_faults(latency_ms=0)
        for child in children_of(worker.pid):
            os.kill(child, signal.SIGKILL)
        started = time.monotonic()
        wait_for_stored_state(redis_client, date, "succeeded", 30)
        recovered_s = time.monotonic() - started
    finally:
        stop(worker)
    assert len(synced_events(redis_client, task_id)) == 1
    assert redis_client.hlen(keys.appointments(date)) == len(simulator.appointments(date))
    print(f"pool child killed: sync completed {recovered_s:.1f}s later")


def test_killed_worker_is_redelivered_to_a_new_one(
    drill_env: dict[str, str], simulator: Any, redis_client: redis.Redis, logs_dir: Path
) -> None:
    date = "2026-12-02"
    first = start_worker(drill_env, logs_dir / "drill-first.log", "drill-first")
    task_id = enqueue(drill_env, redis_client, date)
    wait_for_stored_state(redis_client, date, "running", 20)
    killed_at = time.monotonic()
    stop(first, sig=signal.SIGKILL)
    simulator.set_faults(latency_ms=0)
    second = start_worker(drill_env, logs_dir / "drill-second.log", "drill-second")
    try:
        wait_for_stored_state(redis_client, date, "succeeded", 90)
        redelivered_s = time.monotonic() - killed_at
    finally:
        stop(second)
    assert len(synced_events(redis_client, task_id)) == 1
    assert redis_client.hlen(keys.appointments(date)) == len(simulator.appointments(date))
    # Not before the visibility timeout (the broker cannot tell dead from slow), and soon after it.
    assert redelivered_s >= int(DRILL_ENV["BROKER_VISIBILITY_TIMEOUT_S"]) - 1
    print(f"worker killed: redelivered and completed {redelivered_s:.1f}s later")


def test_killed_pool_child_mid_coalesced_fetch_syncs_every_day_once(
    drill_env: dict[str, str], simulator: Any, redis_client: redis.Redis, logs_dir: Path
) -> None:
    """A week queued before the worker starts: the Monday's task takes the other four days into its fetch
    (docs/tebra.md, "Coalesced syncs"). Its pool process dies inside that call; the requeued Monday takes its
    days back, and every day is synced once, under its own task id."""
    days = ["2026-12-07", "2026-12-08", "2026-12-09", "2026-12-10", "2026-12-11"]  # Monday to Friday
    task_ids = {day: enqueue(drill_env, redis_client, day) for day in days}
    worker = start_worker(drill_env, logs_dir / "drill-coalesced.log", "drill-coalesced")
    try:
        wait_for_stored_state(redis_client, days[-1], "running", 20)  # taken into the Monday's fetch
        assert redis_client.hget(keys.sync_status(days[-1]), "run_by") == task_ids[days[0]]
        time.sleep(0.5)  # inside the slow GetAppointments call
        # Tebra fast again before the kill: the requeued sync can reach it within milliseconds of it.
        simulator.set_faults(latency_ms=0)
        for child in children_of(worker.pid):
            os.kill(child, signal.SIGKILL)
        started = time.monotonic()
        for day in days:
            wait_for_stored_state(redis_client, day, "succeeded", 30)
        recovered_s = time.monotonic() - started
    finally:
        stop(worker)
    for day in days:
        assert len(synced_events(redis_client, task_ids[day])) == 1, day
        assert redis_client.hlen(keys.appointments(day)) == len(simulator.appointments(day)), day
    print(f"pool child killed mid-fetch of {len(days)} days: all synced once, {recovered_s:.1f}s later")
