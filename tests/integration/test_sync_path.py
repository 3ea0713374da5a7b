"""The schedule-sync path end to end: HTTP request → Celery worker → simulator over HTTP → Redis → /ws.

Real Redis, a real prefork worker, the simulator as a subprocess, the API under gunicorn, a real WebSocket
client. What is asserted is what arrived: the event on the socket, the status and appointments the API
serves, compared with what the simulator holds for that day.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
import requests
from websockets.sync.client import connect

from tasks import keys, names
from tests.integration.tebra_flow import (
    day_snapshot,
    request_sync,
    subscribe,
    wait_for_state,
    wait_for_ws_event,
    weekday_ahead,
    ws_url,
)
from tests.support.processes import wait_until

pytestmark = pytest.mark.usefixtures("worker")


def test_sync_reaches_the_socket_and_matches_the_simulator(
    api_server: str, simulator: Any, redis_client: redis.Redis, auth_headers: dict[str, str]
) -> None:
    date = weekday_ahead(1)
    expected = simulator.appointments(date)
    assert expected, "the simulator has appointments every clinic day"
    with connect(ws_url(api_server), open_timeout=5, additional_headers=auth_headers) as ws:
        subscribe(ws, [f"schedule:{date}"])
        accepted = request_sync(api_server, date, auth_headers)
        event = wait_for_ws_event(ws, "schedule_synced")
    # The answer reports the day's state when it was written: a free worker may have started it already.
    assert accepted["status"] in {"queued", "running"} and accepted["deduplicated"] is False
    assert event["data"]["task_id"] == accepted["task_id"]
    assert event["data"]["date"] == date
    assert event["data"]["counts"]["appointments"] == len(expected)

    status = wait_for_state(api_server, date, {"succeeded"}, auth_headers)
    assert status["counts"]["appointments"] == len(expected)
    assert status["task_id"] == accepted["task_id"]
    assert status["duration_ms"] >= 0

    rows = requests.get(
        f"{api_server}/api/v1/appointments", params={"start": date}, headers=auth_headers, timeout=5
    ).json()["data"]
    assert sorted(r["id"] for r in rows) == sorted(str(a["id"]) for a in expected)
    by_id = {str(a["id"]): a for a in expected}
    for row in rows:
        source = by_id[row["id"]]
        assert row["patient_name"] == source["patient_full_name"]
        assert row["start"].startswith(source["start"])  # simulator: local wall time; API: ISO with offset
        assert row["provider_name"] == source["provider_full_name"]

    task = requests.get(
        f"{api_server}/api/v1/tasks/{accepted['task_id']}", headers=auth_headers, timeout=5
    ).json()["data"]
    assert task["state"] == "succeeded" and task["date"] == date


def test_a_second_request_while_queued_is_deduplicated(
    api_server: str, simulator: Any, redis_client: redis.Redis, auth_headers: dict[str, str]
) -> None:
    date = weekday_ahead(2)
    simulator.set_faults(latency_ms=1500)
    try:
        first = request_sync(api_server, date, auth_headers)
        second = request_sync(api_server, date, auth_headers)
        assert second["task_id"] == first["task_id"]
        assert second["deduplicated"] is True
        wait_for_state(api_server, date, {"succeeded"}, auth_headers)
    finally:
        simulator.reset()
    third = request_sync(api_server, date, auth_headers)
    assert third["task_id"] != first["task_id"] and third["deduplicated"] is False
    wait_for_state(api_server, date, {"succeeded"}, auth_headers)
    assert simulator.stats()["calls"].get("GetAppointments", 0) >= 1


def test_running_the_same_sync_twice_changes_nothing(
    api_server: str, redis_client: redis.Redis, auth_headers: dict[str, str]
) -> None:
    date = weekday_ahead(3)
    request_sync(api_server, date, auth_headers)
    wait_for_state(api_server, date, {"succeeded"}, auth_headers)
    before = day_snapshot(redis_client, date)
    request_sync(api_server, date, auth_headers)
    after_status = wait_for_state(api_server, date, {"succeeded"}, auth_headers)
    assert day_snapshot(redis_client, date) == before
    assert after_status["counts"]["added"] == 0 and after_status["counts"]["updated"] == 0


def test_a_finished_sync_delivered_again_is_acknowledged_not_rerun(
    api_server: str, settings: Any, simulator: Any, redis_client: redis.Redis, auth_headers: dict[str, str]
) -> None:
    """At-least-once delivery can hand back a sync that already succeeded (its worker died before the ack):
    it must not run or announce again."""
    from tasks.celery_factory import SYNC_QUEUE, create_celery

    date = weekday_ahead(4)
    accepted = request_sync(api_server, date, auth_headers)
    wait_for_state(api_server, date, {"succeeded"}, auth_headers)
    calls = simulator.stats()["calls"].get("GetAppointments", 0)
    celery = create_celery(settings)
    celery.send_task(names.SYNC, args=[date], task_id=accepted["task_id"], queue=SYNC_QUEUE)
    task_key = keys.task_meta(accepted["task_id"])
    wait_until(lambda: redis_client.hget(task_key, "redeliveries") == "1", 20, "the delivery acknowledged")
    synced = [
        f for _, f in redis_client.xrange(keys.AGENT_UPDATES)
        if f["action"] == "schedule_synced" and accepted["task_id"] in f["payload"]
    ]  # fmt: skip
    assert len(synced) == 1
    assert simulator.stats()["calls"].get("GetAppointments", 0) == calls
