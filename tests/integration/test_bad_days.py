"""Tebra's bad days through the full-sync path: API → real prefork worker → simulator over HTTP → Redis.

An empty read never wipes a day that holds appointments (the re-read with an empty <Fields/>, then
``suspect_empty`` until a second empty read at least EMPTY_CONFIRM_MINUTES later); a row that cannot be
mapped is set aside and the others are stored.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from tasks import events, keys
from tests.integration.tebra_flow import clinic_weekday, events_of, request_sync, wait_for_state

pytestmark = pytest.mark.usefixtures("worker")

DONE = {"succeeded", "failed", "suspect_empty"}


def synced(api: str, date: str, headers: dict[str, str]) -> dict[str, Any]:
    request_sync(api, date, headers)
    return wait_for_state(api, date, DONE, headers)


def make_next_sync_full(client: redis.Redis, date: str) -> None:
    """The day's last full sync is two hours old: its next sync is the hourly full read."""
    two_hours_ago = events.iso_utc(datetime.now(UTC) - timedelta(hours=2))
    client.hset(keys.sync_status(date), "last_full_started_at", two_hours_ago)


def test_a_placeholder_only_reply_keeps_the_day_until_a_second_empty_read_confirms_it(
    api_server: str, sim: Any, redis_client: redis.Redis, auth_headers: dict[str, str]
) -> None:
    date = clinic_weekday(-12)
    held = len(sim.appointments(date))
    assert synced(api_server, date, auth_headers)["state"] == "succeeded"
    assert redis_client.hlen(keys.appointments(date)) == held > 0

    sim.set_faults(placeholder_row="always")  # every GetAppointments answers one placeholder row
    make_next_sync_full(redis_client, date)
    calls = sim.stats()["calls"]["GetAppointments"]
    status = synced(api_server, date, auth_headers)
    assert status["state"] == "suspect_empty", status
    assert status["suspect_empty_kept"] == held and status["suspect_empty_reason"] == "placeholder"
    assert redis_client.hlen(keys.appointments(date)) == held  # nothing deleted
    assert sim.stats()["calls"]["GetAppointments"] == calls + 2  # the read, and the re-read with <Fields/>
    announced = events_of(redis_client, "schedule_suspect_empty", date)
    assert len(announced) == 1 and announced[0]["data"]["kept"] == held

    # Read again within EMPTY_CONFIRM_MINUTES: still kept, not announced again.
    status = synced(api_server, date, auth_headers)
    assert status["state"] == "suspect_empty" and status["suspect_empty_kept"] == held
    assert redis_client.hlen(keys.appointments(date)) == held
    assert len(events_of(redis_client, "schedule_suspect_empty", date)) == 1

    # The first empty read was more than EMPTY_CONFIRM_MINUTES (10) ago: a second empty read confirms it.
    eleven_minutes_ago = events.iso_utc(datetime.now(UTC) - timedelta(minutes=11))
    redis_client.hset(keys.sync_status(date), "suspect_empty_since", eleven_minutes_ago)
    status = synced(api_server, date, auth_headers)
    assert status["state"] == "succeeded", status
    assert status["counts"]["removed"] == held and status.get("suspect_empty_kept") is None
    assert redis_client.hlen(keys.appointments(date)) == 0


def test_a_placeholder_for_the_column_toggles_is_read_again_with_every_column(
    api_server: str, sim: Any, redis_client: redis.Redis, auth_headers: dict[str, str]
) -> None:
    date = clinic_weekday(-13)
    held = len(sim.appointments(date))
    sim.set_faults(placeholder_row="toggles")  # what integrators report: toggles get one empty row
    calls = sim.stats()["calls"].get("GetAppointments", 0)
    status = synced(api_server, date, auth_headers)  # the day's first sync: never "a day with no rows"
    assert status["state"] == "succeeded" and status["counts"]["appointments"] == held
    assert sim.stats()["calls"]["GetAppointments"] == calls + 2

    make_next_sync_full(redis_client, date)
    status = synced(api_server, date, auth_headers)
    assert status["state"] == "succeeded", status
    assert status["counts"]["appointments"] == held and status["counts"]["removed"] == 0
    assert redis_client.hlen(keys.appointments(date)) == held
    assert not events_of(redis_client, "schedule_suspect_empty", date)


def test_a_new_day_answered_only_with_a_placeholder_is_suspect_not_empty(
    api_server: str, sim: Any, redis_client: redis.Redis, auth_headers: dict[str, str]
) -> None:
    date = clinic_weekday(-15)
    sim.set_faults(placeholder_row="always")
    status = synced(api_server, date, auth_headers)
    assert status["state"] == "suspect_empty" and status["suspect_empty_kept"] == 0, status
    assert status.get("last_success_started_at") is None  # the next sync is a full read again


def test_a_day_with_one_unparseable_row_stores_the_others(
    api_server: str, sim: Any, redis_client: redis.Redis, auth_headers: dict[str, str]
) -> None:
    date = clinic_weekday(-14)
    held = sim.appointments(date)
    bad = held[0]["id"]
    sim.set_faults(unreadable_dates=[bad])
    status = synced(api_server, date, auth_headers)
    assert status["state"] == "succeeded", status
    assert status["rows_rejected"] == 1
    stored = redis_client.hgetall(keys.appointments(date))
    assert sorted(stored) == sorted(str(a["id"]) for a in held if a["id"] != bad)
    synced_event = events_of(redis_client, "schedule_synced", date)[-1]
    assert synced_event["data"]["rows_rejected"] == 1

    sim.set_faults(unreadable_dates=None)
    make_next_sync_full(redis_client, date)
    status = synced(api_server, date, auth_headers)
    assert status["rows_rejected"] == 0 and redis_client.hlen(keys.appointments(date)) == len(held)
