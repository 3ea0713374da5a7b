"""The board and status changes through the real app on the real test Redis (in-process client).

Every pair of states in tasks/patients/flow.py goes through ``PATCH /patients/{hpid}/status``: the allowed
ones move the patient (status, source, version, entry timestamp, one event), the others answer 409 naming the
allowed next states and change nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from tasks import events, keys
from tasks.events import EventPublisher
from tasks.patients import flow
from tasks.patients.board import wait_seconds
from tasks.sync.announce import write_day_announced
from tests.support.patients import seed_day, store_for

DATE = (datetime.now(UTC).date() + timedelta(days=7)).isoformat()
PAIRS = [(current, new) for current in flow.STATES for new in flow.STATES]


def status_events(client: redis.Redis) -> list[dict[str, Any]]:
    return [
        events.envelope_from_entry(entry_id, fields)
        for entry_id, fields in client.xrange(keys.AGENT_UPDATES)
        if fields["action"] == events.PATIENT_STATUS_CHANGED
    ]


@pytest.fixture
def headers(auth_headers: dict[str, str]) -> dict[str, str]:
    return dict(auth_headers)


def patch(client: Any, hpid: str, body: dict[str, Any], headers: dict[str, str], date: str = DATE) -> Any:
    return client.patch(f"/api/v1/patients/{hpid}/status?date={date}", json=body, headers=headers)


@pytest.mark.parametrize(("current", "new"), PAIRS, ids=[f"{c}->{n}" for c, n in PAIRS])
def test_every_transition_of_the_state_machine(
    app: Any, client: Any, redis_client: redis.Redis, headers: dict[str, str], current: str, new: str
) -> None:
    (hpid,) = seed_day(redis_client, app.config["CLINIC_SETTINGS"], DATE, [current])
    before = redis_client.hgetall(keys.patient(hpid, DATE))

    response = patch(client, hpid, {"status": new, "version": 1}, headers)

    entry = redis_client.hgetall(keys.patient(hpid, DATE))
    published = status_events(redis_client)
    if flow.can_transition(current, new):
        assert response.status_code == 200, response.get_json()
        data = response.get_json()["data"]
        assert (data["status"], data["previous"], data["version"]) == (new, current, 2)
        assert response.headers["ETag"] == '"2"'
        assert (entry["status"], entry["status_source"], entry["version"]) == (new, "local", "2")
        stamp = flow.timestamp_field(new)
        if stamp:
            assert entry[stamp] == entry["updated_at"] != before.get(stamp)
        assert len(published) == 1
        assert published[0]["id"] == data["event_id"]
        assert published[0]["data"] == {
            "date": DATE,
            "hpid": hpid,
            "status": new,
            "previous": current,
            "version": 2,
            "room": "",
        }
    else:
        assert response.status_code == 409, response.get_json()
        error = response.get_json()["error"]
        assert error["code"] == "CONFLICT"
        assert error["details"]["reason"] == "transition_not_allowed"
        assert error["details"]["allowed"] == flow.allowed_next(current)
        assert error["details"]["status"] == current
        assert entry == before
        assert published == []


def test_the_board_lists_the_day_in_one_read(
    app: Any, client: Any, redis_client: redis.Redis, headers: dict[str, str]
) -> None:
    statuses = [flow.SCHEDULED, flow.ARRIVED, flow.WITH_DOCTOR, flow.CANCELLED]
    hpids = seed_day(redis_client, app.config["CLINIC_SETTINGS"], DATE, statuses)

    response = client.get(f"/api/v1/patients?date={DATE}", headers=headers)

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["date"] == DATE and body["count"] == 4
    rows = body["data"]
    assert [row["hpid"] for row in rows] == hpids  # appointment order
    assert [row["status"] for row in rows] == statuses
    first = rows[0]
    assert first["name"] == "Testa Patient 0"  # opened: PHI is sealed in Redis, plain to the caller
    assert first["appointment_time"] == f"{DATE}T08:00:00-06:00"
    assert first["provider"] == "Dr Sim Ulator"
    assert first["version"] == 1 and first["room"] == "" and first["details"] == "pending"
    assert first["allowed_next"] == flow.allowed_next(flow.SCHEDULED)
    assert first["checkin_time"] is None and first["wait_seconds"] is None
    assert rows[1]["checkin_time"] and rows[1]["wait_seconds"] is not None
    assert set(first) >= {"dob", "with_doctor_time", "completed_time", "status_source"}
    sealed = redis_client.hget(keys.patient(hpids[0], DATE), "name")
    assert sealed and "Testa" not in sealed


def test_an_empty_day_is_an_empty_board(
    client: Any, redis_client: redis.Redis, headers: dict[str, str]
) -> None:
    response = client.get(f"/api/v1/patients?date={DATE}", headers=headers)
    assert response.status_code == 200 and response.get_json()["data"] == []


def test_the_board_names_the_newest_event_at_its_read(
    app: Any, client: Any, redis_client: redis.Redis, headers: dict[str, str]
) -> None:
    (hpid,) = seed_day(redis_client, app.config["CLINIC_SETTINGS"], DATE, [flow.SCHEDULED])
    changed = patch(client, hpid, {"status": flow.CONFIRMED}, headers).get_json()["data"]
    board = client.get(f"/api/v1/patients?date={DATE}", headers=headers).get_json()
    assert board["last_event_id"] == changed["event_id"]
    assert board["data"][0]["version"] == changed["version"]


def test_the_board_needs_a_token(client: Any, redis_client: redis.Redis) -> None:
    assert client.get(f"/api/v1/patients?date={DATE}").status_code == 401


def test_wait_time_runs_from_checkin_to_the_doctor_or_now() -> None:
    now = datetime(2026, 11, 25, 16, 0, tzinfo=UTC)
    assert wait_seconds({}, now) is None
    assert wait_seconds({"checkin_time": "2026-11-25T15:30:00.000Z"}, now) == 1800
    seen = {"checkin_time": "2026-11-25T15:30:00.000Z", "with_doctor_time": "2026-11-25T15:42:00.000Z"}
    assert wait_seconds(seen, now) == 720
    left = {"checkin_time": "2026-11-25T15:30:00.000Z", "completed_time": "2026-11-25T15:50:00.000Z"}
    assert wait_seconds(left, now) == 1200


def test_a_stale_version_is_refused(
    app: Any, client: Any, redis_client: redis.Redis, headers: dict[str, str]
) -> None:
    (hpid,) = seed_day(redis_client, app.config["CLINIC_SETTINGS"], DATE, [flow.SCHEDULED])
    assert patch(client, hpid, {"status": flow.ARRIVED, "version": 1}, headers).status_code == 200

    response = patch(client, hpid, {"status": flow.APPT_PREP, "version": 1}, headers)

    assert response.status_code == 409
    details = response.get_json()["error"]["details"]
    assert details["reason"] == "stale_version"
    assert details["version"] == 2 and details["status"] == flow.ARRIVED
    assert details["allowed"] == [flow.APPT_PREP]
    assert response.headers["ETag"] == '"2"'
    assert redis_client.hget(keys.patient(hpid, DATE), "status") == flow.ARRIVED


def test_if_match_carries_the_version(
    app: Any, client: Any, redis_client: redis.Redis, headers: dict[str, str]
) -> None:
    (hpid,) = seed_day(redis_client, app.config["CLINIC_SETTINGS"], DATE, [flow.SCHEDULED])
    stale = patch(client, hpid, {"status": flow.ARRIVED}, {**headers, "If-Match": '"7"'})
    assert stale.status_code == 409
    assert stale.get_json()["error"]["details"]["reason"] == "stale_version"
    fresh = patch(client, hpid, {"status": flow.ARRIVED}, {**headers, "If-Match": '"1"'})
    assert fresh.status_code == 200 and fresh.headers["ETag"] == '"2"'
    disagree = patch(client, hpid, {"status": flow.APPT_PREP, "version": 2}, {**headers, "If-Match": '"3"'})
    assert disagree.status_code == 400


def test_without_a_version_the_state_machine_still_decides(
    app: Any, client: Any, redis_client: redis.Redis, headers: dict[str, str]
) -> None:
    (hpid,) = seed_day(redis_client, app.config["CLINIC_SETTINGS"], DATE, [flow.SCHEDULED])
    assert patch(client, hpid, {"status": flow.ARRIVED}, headers).status_code == 200
    again = patch(client, hpid, {"status": flow.ARRIVED}, headers)
    assert again.status_code == 409
    assert again.get_json()["error"]["details"]["allowed"] == [flow.APPT_PREP]


def test_room_is_set_kept_and_changed(
    app: Any, client: Any, redis_client: redis.Redis, headers: dict[str, str]
) -> None:
    (hpid,) = seed_day(redis_client, app.config["CLINIC_SETTINGS"], DATE, [flow.ARRIVED])
    moved = patch(client, hpid, {"status": flow.APPT_PREP, "room": "Exam 3"}, headers)
    assert moved.status_code == 200 and moved.get_json()["data"]["room"] == "Exam 3"
    kept = patch(client, hpid, {"status": flow.READY_FOR_MD}, headers)
    assert kept.get_json()["data"]["room"] == "Exam 3"
    # Same status, new room: a room change (a new version and an event, previous == status).
    room_only = patch(client, hpid, {"status": flow.READY_FOR_MD, "room": "Exam 4", "version": 3}, headers)
    assert room_only.status_code == 200
    assert room_only.get_json()["data"] == {
        **room_only.get_json()["data"],
        "status": flow.READY_FOR_MD,
        "previous": flow.READY_FOR_MD,
        "room": "Exam 4",
        "version": 4,
    }
    assert [e["data"]["room"] for e in status_events(redis_client)] == ["Exam 3", "Exam 3", "Exam 4"]


def test_unknown_patient_is_404(client: Any, redis_client: redis.Redis, headers: dict[str, str]) -> None:
    response = patch(client, "0" * 24, {"status": flow.ARRIVED}, headers)
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "NOT_FOUND"
    assert status_events(redis_client) == []


@pytest.mark.parametrize(
    "body",
    [
        {"status": "Arrived"},
        {"status": "checked-in"},
        {},
        {"status": flow.ARRIVED, "version": "1"},
        {"status": flow.ARRIVED, "version": 0},
        {"status": flow.ARRIVED, "room": "x" * 33},
        {"status": flow.ARRIVED, "room": "a\nb"},
        {"status": flow.ARRIVED, "name": "someone"},
    ],
)
def test_bad_bodies_are_400(
    app: Any, client: Any, redis_client: redis.Redis, headers: dict[str, str], body: dict[str, Any]
) -> None:
    (hpid,) = seed_day(redis_client, app.config["CLINIC_SETTINGS"], DATE, [flow.SCHEDULED])
    response = patch(client, hpid, body, headers)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["code"] == "VALIDATION_ERROR"


def test_bad_hpid_and_date_are_400(client: Any, redis_client: redis.Redis, headers: dict[str, str]) -> None:
    assert patch(client, "not-an-hpid", {"status": flow.ARRIVED}, headers).status_code == 400
    assert patch(client, "0" * 24, {"status": flow.ARRIVED}, headers, date="2026-13-01").status_code == 400


def test_the_patch_needs_the_write_scope(
    app: Any, client: Any, redis_client: redis.Redis, make_token: Any
) -> None:
    (hpid,) = seed_day(redis_client, app.config["CLINIC_SETTINGS"], DATE, [flow.SCHEDULED])
    reader = {"Authorization": f"Bearer {make_token(scopes=['read:schedule'])}"}
    assert patch(client, hpid, {"status": flow.ARRIVED}, reader).status_code == 403
    assert redis_client.hget(keys.patient(hpid, DATE), "status") == flow.SCHEDULED


def test_a_sync_that_changes_a_status_announces_it(app: Any, redis_client: redis.Redis) -> None:
    settings = app.config["CLINIC_SETTINGS"]
    hpids = seed_day(redis_client, settings, DATE, [flow.SCHEDULED, flow.CONFIRMED], prefix="sync")
    store = store_for(redis_client, settings)
    publisher = EventPublisher(redis_client, sender="worker", maxlen=1000)
    rows = [
        {
            "id": "sync-0",
            "patient_id": "sync-patient-0",
            "patient_name": "Testa Patient 0",
            "status": "arrived",
        },
        {
            "id": "sync-1",
            "patient_id": "sync-patient-1",
            "patient_name": "Testa Patient 1",
            "status": "confirmed",
        },
    ]
    for index, row in enumerate(rows):
        row.update(start=f"{DATE}T08:{index * 15:02d}:00-06:00", provider_name="Dr Sim Ulator")

    counts = write_day_announced(redis_client, store, publisher, DATE, rows)

    assert counts.status_changed == 1
    (event,) = status_events(redis_client)
    assert event["data"] == {
        "date": DATE,
        "hpid": hpids[0],
        "status": "arrived",
        "previous": "scheduled",
        "version": 2,
        "room": "",
    }
    write_day_announced(redis_client, store, publisher, DATE, rows)  # the same sync again: nothing to say
    assert len(status_events(redis_client)) == 1
    assert json.loads(redis_client.xrange(keys.AGENT_UPDATES)[-1][1]["payload"])["hpid"] == hpids[0]


def test_the_board_reads_from_a_redis_that_does_not_know_its_script_yet(
    app: Any, client: Any, redis_client: redis.Redis, headers: dict[str, str]
) -> None:
    """A new or restarted Redis has no script cache: the read sends the script once, and the request is
    still audited once (the record went out with the first attempt)."""
    seed_day(redis_client, app.config["CLINIC_SETTINGS"], DATE, [flow.SCHEDULED, flow.ARRIVED])
    audited_before = redis_client.xlen(keys.AUDIT)
    redis_client.script_flush()
    response = client.get(f"/api/v1/patients?date={DATE}", headers=headers)
    assert response.status_code == 200 and response.get_json()["count"] == 2
    assert redis_client.xlen(keys.AUDIT) == audited_before + 1
