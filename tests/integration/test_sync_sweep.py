"""The sweep through the real broker and a real prefork worker: an accepted sync whose message the broker lost
runs once after the sweep sends it again; one the broker holds (running, its message unacknowledged) is never
sent again.

The lost message is made the way it is lost in production, minus the crash: the day is claimed and recorded
``queued`` exactly as the API does (tasks/sync/lifecycle.py ``claim``) and no message is left on the broker.
The sweep reads the broker with kombu's own channel and sends with the task's own path.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from celery import Celery
from ulid import ULID

from config import Settings
from tasks import broker_transport, keys, names
from tasks.celery_factory import SYNC_QUEUE, create_celery
from tasks.sync import lifecycle, sweep
from tasks.sync.request import send
from tests.integration.tebra_flow import request_sync, wait_for_state, weekday_ahead
from tests.support.processes import wait_until

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture(scope="module")
def celery(settings: Settings) -> Celery:
    return create_celery(settings)


def run_sweep(client: redis.Redis, celery: Celery, settings: Settings, now: float) -> sweep.SweepReport:
    return sweep.sweep(
        client,
        lambda: broker_transport.held_task_ids(celery, SYNC_QUEUE),
        lambda date, task_id: send(celery, date, task_id),
        interval_s=settings.sync_sweep_interval_s,
        running_limit_s=settings.task_time_limit_s,
        now=now,
    )


def synced(client: redis.Redis, task_id: str) -> int:
    return sum(
        1
        for _, f in client.xrange(keys.AGENT_UPDATES)
        if f["action"] == "schedule_synced" and json.loads(f["payload"]).get("task_id") == task_id
    )


def test_an_accepted_sync_whose_message_was_lost_runs_once_after_the_sweep(
    api_server: str,
    redis_client: redis.Redis,
    settings: Settings,
    celery: Celery,
    simulator: Any,
    auth_headers: dict[str, str],
) -> None:
    date = weekday_ahead(6)
    task_id = str(ULID())
    lifecycle.claim(
        redis_client,
        date,
        task_id,
        lock_ttl_s=settings.sync_lock_ttl_s,
        status_ttl_s=3600,
        requested_by="test",
    )
    # What a user sees of such a day: queued, and a new request deduplicated to the lost task.
    again = request_sync(api_server, date, auth_headers)
    assert again["deduplicated"] is True and again["task_id"] == task_id

    # The worker runs the sweep's shell: it notes the day on its first sighting and sends nothing yet.
    celery.send_task(names.SWEEP, queue=SYNC_QUEUE)
    wait_until(lambda: redis_client.hexists(keys.SYNC_SWEEP, task_id), 20, "the lost sync noted")
    time.sleep(1)
    assert redis_client.hget(keys.sync_status(date), "state") == lifecycle.QUEUED

    # One interval later the next sweep sends it again, under the same task id.
    report = run_sweep(redis_client, celery, settings, time.time() + settings.sync_sweep_interval_s)
    assert report.resent == (date,), report
    status = wait_for_state(api_server, date, {"succeeded"}, auth_headers)
    assert status["task_id"] == task_id
    assert status["counts"]["appointments"] == len(simulator.appointments(date))
    assert synced(redis_client, task_id) == 1
    assert redis_client.hget(keys.task_meta(task_id), "resends") == "1"
    assert not redis_client.exists(keys.sync_lock(date))
    # Finished: no later sweep looks at it again.
    assert (
        run_sweep(redis_client, celery, settings, time.time() + 10 * settings.sync_sweep_interval_s).checked
        == 0
    )


def test_a_running_sync_is_held_by_the_broker_and_never_sent_again(
    api_server: str,
    redis_client: redis.Redis,
    settings: Settings,
    celery: Celery,
    sim: Any,
    auth_headers: dict[str, str],
) -> None:
    date = weekday_ahead(7)
    sim.set_faults(latency_ms=3000)  # GetAppointments (and what a sync calls) takes 3 s: it is running
    accepted = request_sync(api_server, date, auth_headers)
    wait_for_state(api_server, date, {"running"}, auth_headers)

    held = broker_transport.held_task_ids(celery, SYNC_QUEUE)
    assert accepted["task_id"] in held  # reserved and unacknowledged (acks_late) while it runs
    now = time.time()
    assert run_sweep(redis_client, celery, settings, now).missing == ()
    assert run_sweep(redis_client, celery, settings, now + settings.task_time_limit_s + 60).resent == ()

    wait_for_state(api_server, date, {"succeeded"}, auth_headers, timeout=60)
    assert synced(redis_client, accepted["task_id"]) == 1
    assert redis_client.hget(keys.task_meta(accepted["task_id"]), "resends") is None
