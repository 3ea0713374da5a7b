"""The day's schedule in Redis: idempotent writes, sealed PHI, and the merge with local changes."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from config import load_settings
from tasks import keys
from tasks.patients import details
from tasks.phi import PhiCipher
from tasks.sync.reconcile import write_day
from tasks.sync.store import ScheduleStore

DATE = "2026-11-25"


def make_appointment(n: int = 1, **overrides: Any) -> dict[str, Any]:
    """An appointment as the gateway maps it (synthetic values)."""
    appt = {
        "id": str(1000 + n),
        "patient_id": str(500 + n),
        "patient_name": f"Testa Marker{n}",
        "start": f"{DATE}T09:{n:02d}:00-06:00",
        "end": f"{DATE}T09:{n + 15:02d}:00-06:00",
        "tebra_status": "Scheduled",
        "status": "scheduled",
        "provider_id": "7",
        "provider_name": "Dr Provider",
        "location": "Main",
        "reason": "Checkup",
        "type": "P",
        "last_modified": f"{DATE}T08:00:00-06:00",
    }
    appt.update(overrides)
    return appt


@pytest.fixture
def store(redis_client: redis.Redis) -> ScheduleStore:
    """A store on the flushed test database."""
    settings = load_settings({"APP_ENV": "test"})
    return ScheduleStore(
        redis_client, PhiCipher.from_settings(settings), hmac_key=settings.phi_hmac_key, retention_days=1
    )


def snapshot(client: redis.Redis) -> dict[str, Any]:
    """Every key of the data db with its value (hashes and sets as dicts and sorted lists)."""
    out: dict[str, Any] = {}
    for key in sorted(client.keys("*")):
        kind = client.type(key)
        if kind == "hash":
            value = client.hgetall(key)
            value.pop("updated_at", None)
            out[key] = value
        elif kind == "set":
            out[key] = sorted(client.smembers(key))
    return out


def test_writing_the_same_day_twice_changes_nothing(store: ScheduleStore, redis_client: redis.Redis) -> None:
    appointments = [make_appointment(n) for n in range(1, 6)]
    first = write_day(store, DATE, appointments)
    before = snapshot(redis_client)
    raw_before = {k: redis_client.hgetall(k) for k in redis_client.keys("appointments:*")}
    second = write_day(store, DATE, appointments)
    assert (first.added, first.patients_created) == (5, 5)
    assert (second.added, second.updated, second.removed, second.patients_changed) == (0, 0, 0, 0)
    assert snapshot(redis_client) == before
    assert {k: redis_client.hgetall(k) for k in redis_client.keys("appointments:*")} == raw_before


def test_no_patient_data_in_keys_or_clear_in_values(store: ScheduleStore, redis_client: redis.Redis) -> None:
    write_day(store, DATE, [make_appointment(1)])
    for key in redis_client.keys("*"):
        assert "501" not in key and "Marker" not in key
        if redis_client.type(key) == "hash":
            for value in redis_client.hvals(key):
                assert "Marker" not in value and '"501"' not in value


def test_full_sync_removes_what_tebra_no_longer_has(store: ScheduleStore, redis_client: redis.Redis) -> None:
    write_day(store, DATE, [make_appointment(1), make_appointment(2)])
    counts = write_day(store, DATE, [make_appointment(1)])
    assert counts.removed == 1
    assert list(redis_client.hkeys(keys.appointments(DATE))) == ["1001"]


def test_reads_open_the_sealed_fields_and_hide_the_raw_id(store: ScheduleStore) -> None:
    write_day(store, DATE, [make_appointment(2), make_appointment(1)])
    rows = store.appointments_for([DATE])
    assert [r["id"] for r in rows] == ["1001", "1002"]  # ordered by start
    assert rows[0]["patient_name"] == "Testa Marker1"
    assert "patient_id" not in rows[0] and rows[0]["hpid"] == store.hpid("501")


def test_sync_never_moves_a_local_status_backwards(store: ScheduleStore, redis_client: redis.Redis) -> None:
    write_day(store, DATE, [make_appointment(1)])
    key = keys.patient(store.hpid("501"), DATE)
    redis_client.hset(key, mapping={"status": "with-doctor", "status_source": "local"})
    write_day(store, DATE, [make_appointment(1, status="arrived", tebra_status="CheckedIn")])
    assert redis_client.hget(key, "status") == "with-doctor"
    write_day(store, DATE, [make_appointment(1, status="completed", tebra_status="CheckedOut")])
    assert redis_client.hget(key, "status") == "completed"
    assert redis_client.hget(key, "completed_time")


def test_tebra_cancellation_applies_before_arrival_only(
    store: ScheduleStore, redis_client: redis.Redis
) -> None:
    write_day(store, DATE, [make_appointment(1), make_appointment(2)])
    confirmed = keys.patient(store.hpid("501"), DATE)
    arrived = keys.patient(store.hpid("502"), DATE)
    redis_client.hset(confirmed, mapping={"status": "confirmed", "status_source": "local"})
    redis_client.hset(arrived, mapping={"status": "arrived", "status_source": "local"})
    counts = write_day(
        store, DATE, [make_appointment(n, status="cancelled", tebra_status="Cancelled") for n in (1, 2)]
    )
    assert redis_client.hget(confirmed, "status") == "cancelled"
    assert redis_client.hget(arrived, "status") == "arrived"
    assert counts.status_changed == 1


def test_keys_expire_after_retention(store: ScheduleStore, redis_client: redis.Redis) -> None:
    write_day(store, DATE, [make_appointment(1)])
    for key in redis_client.keys("*"):
        assert 0 < redis_client.ttl(key) <= 86400


def test_reasons_are_sealed_in_every_key_and_opened_on_reads(
    store: ScheduleStore, redis_client: redis.Redis
) -> None:
    write_day(store, DATE, [make_appointment(1, reason="Zorvak chest pain follow-up")])
    for key in redis_client.keys("*"):
        values = redis_client.hvals(key) if redis_client.type(key) == "hash" else []
        assert not any("Zorvak" in value for value in values), key
    assert store.appointments_for([DATE])[0]["reason"] == "Zorvak chest pain follow-up"


def test_a_sealed_value_moved_to_another_record_does_not_open(
    store: ScheduleStore, redis_client: redis.Redis
) -> None:
    """A Redis writer without the keys moves patient A's sealed id into B's entry, and A's sealed name into
    B's appointment: B's reads refuse them instead of showing A's data as B's."""
    import orjson
    from cryptography.exceptions import InvalidTag

    write_day(store, DATE, [make_appointment(1), make_appointment(2)])
    a, b = store.hpid("501"), store.hpid("502")
    redis_client.hset(
        keys.patient(b, DATE), "patient_id", redis_client.hget(keys.patient(a, DATE), "patient_id")
    )
    cipher = PhiCipher.from_settings(load_settings({"APP_ENV": "test"}))
    with pytest.raises(InvalidTag):
        details.patient_id(redis_client, cipher, DATE, b)
    assert details.patient_id(redis_client, cipher, DATE, a) == "501"
    day = keys.appointments(DATE)
    first, second = (orjson.loads(redis_client.hget(day, appt_id)) for appt_id in ("1001", "1002"))
    redis_client.hset(day, "1002", orjson.dumps({**second, "patient_name": first["patient_name"]}))
    with pytest.raises(InvalidTag):
        store.appointments_for([DATE])
