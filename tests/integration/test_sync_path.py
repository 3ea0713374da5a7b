"""The schedule-sync path end to end: HTTP request → Celery worker → simulator over HTTP → Redis → /ws.

Real Redis, a real prefork worker, the simulator as a subprocess, the API under gunicorn, a real WebSocket
client. What is asserted is what arrived: the event on the socket, the status and appointments the API
serves, compared with what the simulator holds for that day.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
import requests
from websockets.sync.client import connect

from tasks import keys

pytestmark = pytest.mark.usefixtures("worker")


def clinic_date(offset_days: int) -> str:
    """A clinic day relative to today in the clinic's zone (the API refuses dates far from today)."""
    return (datetime.now(ZoneInfo("America/Chicago")).date() + timedelta(days=offset_days)).isoformat()


def ws_url(api: str) -> str:
    return api.replace("http://", "ws://") + "/ws"


def subscribe(ws: Any, topics: list[str]) -> None:
    ws.send(json.dumps({"type": "subscribe", "topics": topics}))
    while True:
        reply = json.loads(ws.recv(timeout=5))
        if reply.get("type") == "subscribed":
            return


def wait_for_event(ws: Any, event_type: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if message.get("type") == event_type:
            return dict(message)
    raise AssertionError(f"no {event_type} within {timeout}s")


def request_sync(api: str, date: str, headers: dict[str, str]) -> dict[str, Any]:
    response = requests.post(f"{api}/api/v1/schedule/sync", params={"date": date}, headers=headers, timeout=5)
    assert response.status_code == 202, response.text
    return dict(response.json()["data"])


def wait_for_state(
    api: str, date: str, states: set[str], headers: dict[str, str], timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = requests.get(f"{api}/api/v1/schedule/status/{date}", headers=headers, timeout=5)
        if response.ok:
            status = response.json()["data"]
            if status["state"] in states:
                return status
        time.sleep(0.05)
    raise AssertionError(f"sync of {date} never reached {states}: {status}")


def test_sync_reaches_the_socket_and_matches_the_simulator(
    api_server: str, simulator: Any, redis_client: redis.Redis, auth_headers: dict[str, str]
) -> None:
    date = clinic_date(1)
    expected = simulator.appointments(date)
    assert expected, "the simulator has appointments every clinic day"
    with connect(ws_url(api_server), open_timeout=5, additional_headers=auth_headers) as ws:
        subscribe(ws, [f"schedule:{date}"])
        started = time.monotonic()
        accepted = request_sync(api_server, date, auth_headers)
        event = wait_for_event(ws, "schedule_synced")
        elapsed = time.monotonic() - started
    assert accepted["status"] == "queued" and accepted["deduplicated"] is False
    assert event["data"]["task_id"] == accepted["task_id"]
    assert event["data"]["date"] == date
    assert event["data"]["counts"]["appointments"] == len(expected)
    assert elapsed < 5, f"schedule_synced took {elapsed:.2f}s"

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
    date = clinic_date(2)
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


def data_snapshot(client: redis.Redis, date: str) -> dict[str, Any]:
    out: dict[str, Any] = {"appointments": client.hgetall(keys.appointments(date))}
    for hpid in sorted(client.smembers(keys.patients_index(date))):
        entry = client.hgetall(keys.patient(hpid, date))
        entry.pop("updated_at", None)
        out[hpid] = entry
    return out


def test_running_the_same_sync_twice_changes_nothing(
    api_server: str, redis_client: redis.Redis, auth_headers: dict[str, str]
) -> None:
    date = clinic_date(3)
    request_sync(api_server, date, auth_headers)
    wait_for_state(api_server, date, {"succeeded"}, auth_headers)
    before = data_snapshot(redis_client, date)
    request_sync(api_server, date, auth_headers)
    after_status = wait_for_state(api_server, date, {"succeeded"}, auth_headers)
    assert data_snapshot(redis_client, date) == before
    assert after_status["counts"]["added"] == 0 and after_status["counts"]["updated"] == 0


def test_a_finished_sync_delivered_again_is_acknowledged_not_rerun(
    api_server: str, settings: Any, simulator: Any, redis_client: redis.Redis, auth_headers: dict[str, str]
) -> None:
    """At-least-once delivery can hand back a sync that already succeeded (its worker died before the ack):
    it must not run or announce again."""
    from tasks.celery_factory import SYNC_QUEUE, create_celery

    date = clinic_date(4)
    accepted = request_sync(api_server, date, auth_headers)
    wait_for_state(api_server, date, {"succeeded"}, auth_headers)
    calls = simulator.stats()["calls"].get("GetAppointments", 0)
    celery = create_celery(settings)
    celery.backend.forget(accepted["task_id"])  # so .get() waits for the second delivery's own result
    again = celery.send_task("schedule.sync", args=[date], task_id=accepted["task_id"], queue=SYNC_QUEUE)
    result = again.get(timeout=20)
    assert result.get("redelivered") is True, result
    synced = [
        f for _, f in redis_client.xrange(keys.AGENT_UPDATES)
        if f["action"] == "schedule_synced" and accepted["task_id"] in f["payload"]
    ]  # fmt: skip
    assert len(synced) == 1
    assert simulator.stats()["calls"].get("GetAppointments", 0) == calls
