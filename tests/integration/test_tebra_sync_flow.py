"""The day's whole data through the real path: patient details after the sync, incremental syncs merged into
what is stored, and a daylight-saving day — API → prefork worker → simulator over HTTP → Redis.
"""

from __future__ import annotations

import json
import time
from datetime import date as date_type
from typing import Any

import pytest
import redis

from config.settings import Settings
from tasks import keys, names
from tasks.phi import DETAILS_FIELD, PhiCipher, patient_binding
from tests.conftest import TEST_BROKER_URL
from tests.integration.tebra_flow import (
    clinic_date,
    clinic_weekday,
    day_snapshot,
    events_of,
    request_sync,
    wait_for_events,
    wait_for_state,
)

pytestmark = pytest.mark.usefixtures("worker")


def settle_lookups(sim: Any, client: redis.Redis, timeout: float = 30) -> None:
    """Wait until no lookup left by an earlier test is queued or calling the simulator, then start clean:
    data database flushed again (such a lookup may have cached a patient), simulator counters at zero."""
    broker = redis.Redis.from_url(TEST_BROKER_URL, decode_responses=True)
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        calls = sim.stats()["calls"].get("GetPatient", 0)
        if broker.llen("details") == 0 and calls == last:
            break
        last = calls
        time.sleep(1.0)
    client.flushdb()
    sim.reset()
    sim.set_faults(throttle=False)


def sync(api: str, date: str, headers: dict[str, str]) -> dict[str, Any]:
    request_sync(api, date, headers)
    return wait_for_state(api, date, {"succeeded", "failed"}, headers)


def test_details_follow_the_sync_sealed_cached_and_announced(
    api_server: str, sim: Any, redis_client: redis.Redis, settings: Settings, auth_headers: dict[str, str]
) -> None:
    date = clinic_weekday(-12)
    rows = sim.appointments(date)
    patients = {str(r["patient_id"]) for r in rows}
    settle_lookups(sim, redis_client)  # lookups left by earlier tests must not take the fault below
    # One patient Tebra will not give us: the first GetPatient answers a business error.
    sim.set_faults(business_error={"count": 1, "operations": ["GetPatient"]})
    status = sync(api_server, date, auth_headers)
    assert status["state"] == "succeeded"

    arrived = wait_for_events(redis_client, "patient_details_updated", date, len(patients))
    synced = events_of(redis_client, "schedule_synced", date)
    assert len(synced) == 1
    first_detail = min(arrived, key=lambda e: tuple(map(int, e["id"].split("-"))))
    assert tuple(map(int, synced[0]["id"].split("-"))) < tuple(map(int, first_detail["id"].split("-")))
    for event in arrived:
        assert set(event["data"]) == {"date", "hpid", "details"}  # no PHI in the event

    cipher = PhiCipher.from_settings(settings)
    states = {}
    for hpid in redis_client.smembers(keys.patients_index(date)):
        entry = redis_client.hgetall(keys.patient(hpid, date))
        states[hpid] = entry["details"]
        if entry["details"] == "complete":
            patient_id = cipher.open(entry["patient_id"], patient_binding(hpid, "patient_id", date))
            assert entry["dob"].startswith("v2.")
            cached = redis_client.get(keys.patient_details(hpid))
            assert cached and cached.startswith("v2.")
            dob = cipher.open(entry["dob"], patient_binding(hpid, "dob", date))
            assert json.loads(cipher.open(cached, patient_binding(hpid, DETAILS_FIELD)) or "{}")["dob"] == dob
            assert 0 < redis_client.ttl(keys.patient_details(hpid)) <= settings.retention_days * 86400
            assert patient_id not in hpid
        else:
            assert "dob" not in entry
    assert sorted(states.values()).count("incomplete") == 1, states
    assert len(states) == len(patients)
    stats = sim.stats()
    assert stats["calls"]["GetPatient"] == len(patients)

    # Task arguments carry the date and the hpid only (the result backend keeps them: result_extended).
    broker = redis.Redis.from_url(TEST_BROKER_URL, decode_responses=True)
    metas = [json.loads(broker.get(k) or "{}") for k in broker.scan_iter("celery-task-meta-*", count=1000)]
    lookups = [m for m in metas if m.get("name") == names.FETCH_DETAILS and m["args"][0] == date]
    assert lookups and all(len(m["args"]) == 2 and m["args"][1] in states for m in lookups)
    assert all(str(pid) not in json.dumps(m["args"]) for m in lookups for pid in patients)

    # Another day with the same patients: the complete ones come from the cache, not from Tebra.
    sim.reset()
    sim.set_faults(throttle=False)
    other = clinic_weekday(-13)
    other_patients = {str(r["patient_id"]) for r in sim.appointments(other)}
    assert sync(api_server, other, auth_headers)["state"] == "succeeded"
    wait_for_events(redis_client, "patient_details_updated", other, len(other_patients))
    complete_before = {h for h, s in states.items() if s == "complete"}
    other_hpids = set(redis_client.smembers(keys.patients_index(other)))
    assert sim.stats()["calls"].get("GetPatient", 0) == len(other_hpids - complete_before)


def test_incremental_sync_changes_only_the_edited_appointment(
    api_server: str, sim: Any, redis_client: redis.Redis, auth_headers: dict[str, str]
) -> None:
    date = clinic_weekday(-3)  # a past day: its seeded rows were last modified before it began
    first = sync(api_server, date, auth_headers)
    assert first["state"] == "succeeded" and first["mode"] == "full"
    rows = sim.appointments(date)
    wait_for_events(redis_client, "patient_details_updated", date, len({r["patient_id"] for r in rows}))
    before = day_snapshot(redis_client, date)
    assert rows, "the simulator books every weekday"
    target = rows[0]
    new_status = "Cancelled" if target["wire"]["ConfirmationStatus"] != "Cancelled" else "No-show"
    sim.edit_appointment("status", id=target["id"], status=new_status)

    second = sync(api_server, date, auth_headers)
    assert second["state"] == "succeeded" and second["mode"] == "incremental", second
    assert second["counts"]["appointments"] == 1  # only the changed row came back from Tebra
    assert second["counts"]["updated"] == 1 and second["counts"]["removed"] == 0
    after = day_snapshot(redis_client, date)
    changed = {k for k, v in after["appointments"].items() if before["appointments"].get(k) != v}
    assert changed == {str(target["id"])}
    assert after["appointments"].keys() == before["appointments"].keys()
    changed_entries = {k for k in after if k != "appointments" and after[k] != before.get(k)}
    assert len(changed_entries) <= 1  # the patient's entry, if this appointment speaks for them
    stored = json.loads(after["appointments"][str(target["id"])])
    assert stored["tebra_status"] == new_status

    # The incremental request carried the LastModified pair (the simulator filtered by it).
    assert sim.stats()["calls"]["GetAppointments"] == 2


@pytest.mark.parametrize("day", ["2026-11-01", "2027-03-14"])
def test_a_daylight_saving_day_through_the_whole_path(
    api_server: str, sim: Any, redis_client: redis.Redis, auth_headers: dict[str, str], day: str
) -> None:
    if abs((date_type.fromisoformat(day) - date_type.fromisoformat(clinic_date(0))).days) > 366:
        pytest.skip("the API only syncs days within a year of today")
    patient_id = sim.appointments(clinic_weekday(-1))[0]["patient_id"]
    following = (date_type.fromisoformat(day).toordinal() + 1) - date_type.fromisoformat(day).toordinal()
    assert following == 1
    next_day = date_type.fromordinal(date_type.fromisoformat(day).toordinal() + 1).isoformat()
    added = {}
    for local in (f"{day}T00:30:00", f"{day}T03:30:00", f"{day}T23:30:00", f"{next_day}T00:00:00"):
        row = sim.edit_appointment("add", patient_id=patient_id, start=local, duration_minutes=60)
        added[local] = str(row["id"])
    status = sync(api_server, day, auth_headers)
    assert status["state"] == "succeeded"
    stored = {k: json.loads(v) for k, v in redis_client.hgetall(keys.appointments(day)).items()}
    assert set(stored) == {str(r["id"]) for r in sim.appointments(day)}
    assert added[f"{next_day}T00:00:00"] not in stored  # the next midnight belongs to the next day
    spring = day.endswith("-03-14")
    early, late = ("-06:00", "-05:00") if spring else ("-05:00", "-06:00")
    assert stored[added[f"{day}T00:30:00"]]["start"] == f"{day}T00:30:00{early}"
    assert stored[added[f"{day}T03:30:00"]]["start"] == f"{day}T03:30:00{late}"
    assert stored[added[f"{day}T23:30:00"]]["start"] == f"{day}T23:30:00{late}"
    # A 60-minute visit starting 00:30 on a 23- or 25-hour day ends an hour later in real time.
    assert stored[added[f"{day}T00:30:00"]]["end"] == f"{day}T01:30:00{early}"
