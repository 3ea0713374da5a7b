"""Every Tebra failure shape through the whole path: API → real prefork worker → simulator over HTTP → Redis.

One test per shape. Each asserts the sync's final status (GET /api/v1/schedule/status), the event in
``agent_updates`` (and on /ws for the terminal failures), what was written to Redis, and what the simulator
counted on the wire. The session worker runs with the client-side throttle off (stack_env); the throttle
tests switch the simulator's on and provoke it.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest
import redis
import requests
from websockets.sync.client import connect

from config.settings import Settings
from tasks import keys
from tasks.events import read_since
from tasks.tebra import client as tebra_client
from tasks.tebra.gateway import TebraGateway
from tasks.tebra.mapping import clinic_day_bounds
from tests.integration.tebra_flow import (
    CLINIC_TZ,
    clinic_weekday,
    events_of,
    request_sync,
    subscribe,
    wait_for_state,
    wait_for_ws_event,
    ws_url,
)

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture(scope="module")
def direct_gateway(settings: Settings) -> TebraGateway:
    """A gateway of the test's own, to spend the account's GetAppointments slot just before the worker."""
    return TebraGateway(settings, client=tebra_client.build_client(settings), throttle_retries=0)


def spend_slot(gateway: TebraGateway, date: str) -> None:
    start, end = clinic_day_bounds(datetime.fromisoformat(date).date(), CLINIC_TZ)
    gateway.get_appointments(start, end)


def assert_no_outage(client: redis.Redis) -> None:
    """Throttling is pacing: the shared breaker state (when there is one) never counts it."""
    breaker = client.hgetall(keys.BREAKER)
    assert breaker.get("state", "closed") == "closed", breaker


@pytest.mark.parametrize("shape", ["error_response", "http_429", "out_of_order"])
def test_throttled_in_each_shape_is_retried_and_succeeds(
    api_server: str,
    sim: Any,
    redis_client: redis.Redis,
    auth_headers: dict[str, str],
    direct_gateway: TebraGateway,
    shape: str,
) -> None:
    date = clinic_weekday(-5)
    sim.set_faults(throttle=True, throttle_shape=shape)
    spend_slot(direct_gateway, clinic_weekday(-6))  # the worker's call lands inside the 1 s window
    accepted = request_sync(api_server, date, auth_headers)
    seen: list[str] = []
    status = wait_for_state(api_server, date, {"succeeded", "failed"}, auth_headers, seen=seen)

    assert status["state"] == "succeeded", (status, seen)
    assert status["task_id"] == accepted["task_id"]
    assert all(not mark.endswith("TEBRA_UPSTREAM") for mark in seen), seen
    stats = sim.stats()
    assert stats["throttled"].get("GetAppointments", 0) >= 1, stats["throttled"]
    assert stats["accepted"]["GetAppointments"] >= 2  # our call, then the worker's retry
    assert stats["faults_served"] == 0
    synced = events_of(redis_client, "schedule_synced", date)
    assert len(synced) == 1 and synced[0]["data"]["counts"]["appointments"] == len(sim.appointments(date))
    assert not events_of(redis_client, "schedule_sync_failed", date)
    assert redis_client.hlen(keys.appointments(date)) == len(sim.appointments(date))
    assert_no_outage(redis_client)


@pytest.mark.slow(seconds=11)
def test_security_failure_is_one_call_latched_and_deferred_until_resumed(
    api_server: str, sim: Any, redis_client: redis.Redis, auth_headers: dict[str, str]
) -> None:
    date = clinic_weekday(-7)
    sim.set_faults(security="bad_password")
    with connect(ws_url(api_server), open_timeout=5, additional_headers=auth_headers) as ws:
        subscribe(ws, ["ops"])
        accepted = request_sync(api_server, date, auth_headers)
        pushed = wait_for_ws_event(ws, "tebra_credentials_refused")
    seen: list[str] = []
    status = wait_for_state(api_server, date, {"deferred", "succeeded", "failed"}, auth_headers, seen=seen)

    assert status["state"] == "deferred" and status["error"] == "TEBRA_CREDENTIALS_REFUSED", status
    assert status["task_id"] == accepted["task_id"]
    assert "Invalid user name and/or password" in pushed["data"]["message"]
    assert "Authenticated=false" in pushed["data"]["message"]
    assert "relay-dev-password" not in pushed["data"]["message"]
    refused = [e for e in read_since(redis_client, "0-0") if e["type"] == "tebra_credentials_refused"]
    assert len(refused) == 1 and refused[0]["id"] == pushed["id"]
    assert not events_of(redis_client, "schedule_sync_failed", date)
    # One refused call in all: this sync's, or a patient lookup left queued by an earlier test (the latch
    # holds every operation alike; such a lookup may also have gone through before the fault was set).
    stats = sim.stats()
    assert sum(stats["security_failures"].values()) == 1, stats["security_failures"]
    assert stats["calls"].get("GetAppointments", 0) <= 1, stats["calls"]
    assert not redis_client.exists(keys.appointments(date))

    # Fixed (here: the simulator accepts the account again), then resumed: the deferred sync completes.
    sim.set_faults(security=None)
    resumed = requests.post(
        f"{api_server}/api/v1/ops/tebra", json={"action": "resume"}, headers=auth_headers, timeout=5
    )
    assert resumed.status_code == 200 and resumed.json()["data"]["changed"] is True
    status = wait_for_state(api_server, date, {"succeeded", "failed"}, auth_headers, timeout=40)
    assert status["state"] == "succeeded", status
    assert redis_client.hlen(keys.appointments(date)) == len(sim.appointments(date))
    assert sum(sim.stats()["security_failures"].values()) == 1


def test_internal_service_fault_is_retried_with_backoff_and_succeeds(
    api_server: str, sim: Any, redis_client: redis.Redis, auth_headers: dict[str, str]
) -> None:
    date = clinic_weekday(-8)
    sim.set_faults(internal_fault={"count": 2, "operations": ["GetAppointments"]})
    started = time.monotonic()
    request_sync(api_server, date, auth_headers)
    seen: list[str] = []
    status = wait_for_state(api_server, date, {"succeeded", "failed"}, auth_headers, timeout=40, seen=seen)
    elapsed = time.monotonic() - started

    assert status["state"] == "succeeded", (status, seen)
    assert status["attempt"] == 2
    assert "retrying:TEBRA_UPSTREAM" in seen, seen
    assert elapsed >= 2.0, "two retries, each after at least 1 s of backoff"
    stats = sim.stats()
    assert stats["faults"].get("internal_fault") == 2
    assert stats["calls"]["GetAppointments"] == 3 and stats["accepted"]["GetAppointments"] == 3
    assert len(events_of(redis_client, "schedule_synced", date)) == 1
    assert not events_of(redis_client, "schedule_sync_failed", date)
    assert redis_client.hlen(keys.appointments(date)) == len(sim.appointments(date))


def test_business_error_fails_the_task_without_retry(
    api_server: str, sim: Any, redis_client: redis.Redis, auth_headers: dict[str, str]
) -> None:
    date = clinic_weekday(-9)
    sim.set_faults(business_error={"count": 1, "operations": ["GetAppointments"]})
    accepted = request_sync(api_server, date, auth_headers)
    seen: list[str] = []
    status = wait_for_state(api_server, date, {"succeeded", "failed"}, auth_headers, seen=seen)

    assert status["state"] == "failed" and status["error"] == "TEBRA_ERROR", status
    assert "Object reference not set" in status["error_message"]
    assert not any(mark.startswith("retrying") for mark in seen), seen
    failed = events_of(redis_client, "schedule_sync_failed", date)
    assert len(failed) == 1 and failed[0]["data"]["task_id"] == accepted["task_id"]
    time.sleep(1.5)
    stats = sim.stats()
    assert stats["calls"].get("GetAppointments") == 1
    assert stats["faults"].get("business_error") == 1
    assert not redis_client.exists(keys.appointments(date))
    assert_no_outage(redis_client)


@pytest.mark.slow(seconds=11)
def test_a_hang_past_the_operation_timeout_is_retried(
    api_server: str, sim: Any, redis_client: redis.Redis, auth_headers: dict[str, str], settings: Settings
) -> None:
    date = clinic_weekday(-10)
    hang_s = settings.tebra_operation_timeout_s + 3
    sim.set_faults(hang={"seconds": hang_s, "count": 1, "operations": ["GetAppointments"]})
    request_sync(api_server, date, auth_headers)
    seen: list[str] = []
    status = wait_for_state(
        api_server, date, {"succeeded", "failed"}, auth_headers, timeout=hang_s + 20, seen=seen
    )

    assert status["state"] == "succeeded", (status, seen)
    assert "retrying:TEBRA_UPSTREAM" in seen, seen
    assert status["attempt"] == 1
    stats = sim.stats()
    assert stats["faults"].get("hang") == 1
    assert stats["calls"]["GetAppointments"] == 2
    assert len(events_of(redis_client, "schedule_synced", date)) == 1
    assert redis_client.hlen(keys.appointments(date)) == len(sim.appointments(date))
