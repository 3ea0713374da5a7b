"""``POST /schedule/sync?mode=full`` through the real API and worker: a full read of a day removes what Tebra
deleted, announces the patient who left, and a second identical full read changes no byte."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
import requests

from tasks import keys, phi
from tests.integration.tebra_flow import day_snapshot, wait_for_state, weekday_ahead

pytestmark = pytest.mark.usefixtures("worker")


def sync(api: str, date: str, headers: dict[str, str], **params: str) -> requests.Response:
    return requests.post(
        f"{api}/api/v1/schedule/sync", params={"date": date, **params}, headers=headers, timeout=5
    )


def removed_events(client: redis.Redis, date: str) -> list[dict[str, Any]]:
    return [
        json.loads(fields["payload"])
        for _, fields in client.xrange(keys.AGENT_UPDATES)
        if fields["action"] == "patient_removed" and json.loads(fields["payload"])["date"] == date
    ]


def index_entries(client: redis.Redis) -> dict[str, str]:
    return {key: client.get(key) for key in sorted(client.keys("appointment:*"))}


def test_mode_full_removes_what_tebra_deleted_and_is_idempotent(
    api_server: str, sim: Any, redis_client: redis.Redis, settings: Any, auth_headers: dict[str, str]
) -> None:
    date = weekday_ahead(8)
    assert sync(api_server, date, auth_headers).status_code == 202
    wait_for_state(api_server, date, {"succeeded"}, auth_headers)
    rows = sim.appointments(date)
    counts: dict[Any, int] = {}
    for row in rows:
        counts[row["patient_id"]] = counts.get(row["patient_id"], 0) + 1
    gone = next(row for row in rows if counts[row["patient_id"]] == 1)
    sim.edit_appointment("delete", id=gone["id"])

    accepted = sync(api_server, date, auth_headers, mode="full")
    assert accepted.status_code == 202 and accepted.json()["data"]["mode"] == "full"
    status = wait_for_state(api_server, date, {"succeeded"}, auth_headers)
    assert status["mode"] == "full" and status["counts"]["removed"] == 1
    assert not redis_client.hexists(keys.appointments(date), str(gone["id"]))
    gone_hpid = phi.hpid(str(gone["patient_id"]), settings.phi_hmac_key)
    assert gone_hpid not in redis_client.smembers(keys.patients_index(date))
    assert removed_events(redis_client, date) == [{"date": date, "hpid": gone_hpid, "reason": "deleted"}]

    before, index_before = day_snapshot(redis_client, date), index_entries(redis_client)
    assert sync(api_server, date, auth_headers, mode="full").status_code == 202
    again = wait_for_state(api_server, date, {"succeeded"}, auth_headers)
    assert again["mode"] == "full" and again["task_id"] != status["task_id"]
    assert day_snapshot(redis_client, date) == before
    assert index_entries(redis_client) == index_before
    assert len(removed_events(redis_client, date)) == 1


@pytest.mark.parametrize("mode", ["FULL", "fast", "", "full,incremental"])
def test_a_bad_mode_is_refused_and_queues_nothing(
    api_server: str, redis_client: redis.Redis, auth_headers: dict[str, str], mode: str
) -> None:
    date = weekday_ahead(9)
    response = sync(api_server, date, auth_headers, mode=mode)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and "mode" in str(error["details"])
    assert not redis_client.exists(keys.sync_lock(date)) and not redis_client.exists(keys.sync_status(date))
