"""Shutdown drills: SIGTERM reaches a worker in the middle of a sync, and the sync completes exactly once.

``docker stop`` (and compose, and Kubernetes) send SIGTERM to the container's first process, the worker's
parent: Celery's warm shutdown stops taking messages, lets the running task finish and acks it, then exits.
A process manager that signals the whole process group (honcho, systemd's default) also hits the pool
children; that case ends with the message requeued and finished by the next worker. Either way: one
``schedule_synced`` for the task, never zero, never two. Same drill broker and helpers as the crash drills.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tasks import keys
from tests.reliability.test_worker_death import (
    DRILL_BROKER_URL,
    DRILL_ENV,
    enqueue,
    start_worker,
    synced_events,
)
from tests.support.processes import stop
from tests.support.sync_state import wait_for_stored_state

SLOW_TEBRA_MS = 3000


@pytest.fixture
def shutdown_env(stack_env: dict[str, str], simulator: Any) -> Iterator[dict[str, str]]:
    """The drill environment, with every GetAppointments taking 3 s."""
    broker = redis.Redis.from_url(DRILL_BROKER_URL)
    broker.flushdb()
    simulator.set_faults(latency_ms=SLOW_TEBRA_MS)
    yield {**stack_env, **DRILL_ENV}
    simulator.reset()
    broker.close()


def broker_holds_nothing(env: dict[str, str]) -> bool:
    """No message waiting, none reserved unacked: nothing left to be delivered again."""
    broker = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    try:
        return broker.llen("sync") == 0 and broker.hlen("unacked") == 0
    finally:
        broker.close()


def test_sigterm_mid_sync_finishes_the_running_task_then_exits(
    shutdown_env: dict[str, str], simulator: Any, redis_client: redis.Redis, logs_dir: Path
) -> None:
    date = "2026-12-03"
    log = logs_dir / "drill-sigterm.log"
    worker = start_worker(shutdown_env, log, "drill-sigterm")
    try:
        task_id = enqueue(shutdown_env, redis_client, date)
        wait_for_stored_state(redis_client, date, "running", 20)
        time.sleep(0.5)  # inside the slow GetAppointments call
        signalled = time.time()
        os.kill(worker.pid, signal.SIGTERM)  # the parent only, as docker stop does
        code = worker.wait(30)
    finally:
        stop(worker)
    status = wait_for_stored_state(redis_client, date, "succeeded", 1)
    assert code == 0, f"worker exited {code}"
    assert "warm shutdown" in log.read_text(errors="replace").lower()
    assert len(synced_events(redis_client, task_id)) == 1
    assert status["task_id"] == task_id
    assert redis_client.hlen(keys.appointments(date)) == len(simulator.appointments(date))
    assert broker_holds_nothing(shutdown_env), "the finished task was acked, not left to be redelivered"
    print(f"SIGTERM mid-sync: worker finished the task and exited {time.time() - signalled:.1f}s later")


@pytest.mark.slow(seconds=30)
def test_sigterm_to_the_process_group_requeues_and_the_next_worker_syncs_once(
    shutdown_env: dict[str, str], simulator: Any, redis_client: redis.Redis, logs_dir: Path
) -> None:
    date = "2026-12-04"
    first = start_worker(shutdown_env, logs_dir / "drill-group-first.log", "drill-group-first")
    task_id = enqueue(shutdown_env, redis_client, date)
    wait_for_stored_state(redis_client, date, "running", 20)
    time.sleep(0.5)
    signalled = time.monotonic()
    os.killpg(first.pid, signal.SIGTERM)  # parent and pool children, as honcho or systemd would
    first.wait(30)
    # Tebra fast again once the kill has landed mid-call: on a loaded machine three slow calls could outlast
    # the redelivered sync's 8 s soft time limit, which is not what this drill is about.
    simulator.set_faults(latency_ms=0)
    second = start_worker(shutdown_env, logs_dir / "drill-group-second.log", "drill-group-second")
    try:
        wait_for_stored_state(redis_client, date, "succeeded", 40)
        done_s = time.monotonic() - signalled
        time.sleep(1)  # a duplicate delivery would show as a second event by now
    finally:
        stop(second)
    assert len(synced_events(redis_client, task_id)) == 1
    assert redis_client.hlen(keys.appointments(date)) == len(simulator.appointments(date))
    assert broker_holds_nothing(shutdown_env)
    print(f"SIGTERM to the group: sync completed once, {done_s:.1f}s after the signal")
