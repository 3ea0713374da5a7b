"""Reconciliation by appointment id against a real Redis: moves between days, removals, stale reads, the
full-read guard, and the conflict flag on a visit the clinic has under way."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from config import load_settings
from tasks import events, keys
from tasks.patients.board import PatientFlow
from tasks.phi import PhiCipher
from tasks.sync.reconcile import DayRead, Reconciler
from tasks.sync.store import ScheduleStore
from tests.unit.test_store import make_appointment

DAY1 = "2026-11-24"
DAY2 = "2026-11-25"
EARLY = "2026-11-20T08:00:00-06:00"
LATER = "2026-11-23T10:00:00-06:00"


def row(
    n: int, day: str, *, patient: int | None = None, modified: str = EARLY, **extra: Any
) -> dict[str, Any]:
    """An appointment as the gateway maps it (synthetic values), on ``day``."""
    return make_appointment(
        n,
        patient_id=str(500 + (patient if patient is not None else n)),
        start=f"{day}T09:{n:02d}:00-06:00",
        end=f"{day}T09:{n + 15:02d}:00-06:00",
        last_modified=modified,
        **extra,
    )


@pytest.fixture
def store(redis_client: redis.Redis) -> ScheduleStore:
    settings = load_settings({"APP_ENV": "test"})
    return ScheduleStore(
        redis_client, PhiCipher.from_settings(settings), hmac_key=settings.phi_hmac_key, retention_days=1
    )


@pytest.fixture
def reconciler(redis_client: redis.Redis, store: ScheduleStore) -> Reconciler:
    return Reconciler(redis_client, store, sender="test", maxlen=1000)


@pytest.fixture
def flow_(redis_client: redis.Redis, store: ScheduleStore) -> PatientFlow:
    settings = load_settings({"APP_ENV": "test"})
    return PatientFlow(redis_client, PhiCipher.from_settings(settings), sender="test", maxlen=1000)


def read(reconciler: Reconciler, *days: tuple[str, list[dict[str, Any]], bool], at: str = "") -> Any:
    return reconciler.apply(
        [DayRead(day, rows, full) for day, rows, full in days],
        read_started_at=at or events.utc_now_iso(),
        fetched={r["id"] for _, rows, _ in days for r in rows},
    )


def sent(client: redis.Redis, event_type: str) -> list[dict[str, Any]]:
    return [
        json.loads(fields["payload"])
        for _, fields in client.xrange(keys.AGENT_UPDATES)
        if fields["action"] == event_type
    ]


def snapshot(client: redis.Redis) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in sorted(client.keys("*")):
        if key == keys.AGENT_UPDATES:
            continue
        kind = client.type(key)
        if kind == "hash":
            value = client.hgetall(key)
            value.pop("updated_at", None)
            out[key] = value
        elif kind == "set":
            out[key] = sorted(client.smembers(key))
        elif kind == "string":
            out[key] = client.get(key)
    return out


def test_a_move_leaves_the_old_day_and_joins_the_new_one(
    reconciler: Reconciler, store: ScheduleStore, redis_client: redis.Redis
) -> None:
    read(reconciler, (DAY1, [row(1, DAY1), row(2, DAY1)], True), (DAY2, [row(3, DAY2)], True))
    moved = row(1, DAY2, modified=LATER)
    applied = read(reconciler, (DAY2, [moved], False))

    assert set(redis_client.hkeys(keys.appointments(DAY1))) == {"1002"}
    assert set(redis_client.hkeys(keys.appointments(DAY2))) == {"1001", "1003"}
    gone = store.hpid("501")
    assert not redis_client.exists(keys.patient(gone, DAY1))
    assert gone not in redis_client.smembers(keys.patients_index(DAY1))
    assert redis_client.hget(keys.patient(gone, DAY2), "appointment_id") == "1001"
    assert json.loads(redis_client.get(keys.appointment_index("1001")))["date"] == DAY2
    assert sent(redis_client, "patient_removed") == [
        {"date": DAY1, "hpid": gone, "reason": "moved", "to_date": DAY2}
    ]
    assert applied.counts[DAY1].moved_out == 1 and applied.counts[DAY1].patients_removed == 1
    assert applied.counts[DAY2].moved_in == 1 and applied.counts[DAY2].patients_created == 1


def test_an_older_version_never_undoes_a_newer_one(reconciler: Reconciler, redis_client: redis.Redis) -> None:
    read(reconciler, (DAY1, [row(1, DAY1)], True))
    read(reconciler, (DAY2, [row(1, DAY2, modified=LATER)], False))
    late = read(reconciler, (DAY1, [row(1, DAY1, modified=EARLY)], False))  # a slow read from before the move

    assert late.stale == 1
    assert not redis_client.hexists(keys.appointments(DAY1), "1001")
    assert redis_client.hexists(keys.appointments(DAY2), "1001")


def test_a_full_read_removes_what_tebra_deleted_but_not_what_a_later_read_stored(
    reconciler: Reconciler, store: ScheduleStore, redis_client: redis.Redis
) -> None:
    read(reconciler, (DAY1, [row(1, DAY1), row(2, DAY1)], True))
    began = events.utc_now_iso()  # a full read begins; a booking lands (seen by a later read) before it ends
    read(reconciler, (DAY1, [row(3, DAY1, modified=LATER)], False))
    applied = read(reconciler, (DAY1, [row(1, DAY1)], True), at=began)

    assert set(redis_client.hkeys(keys.appointments(DAY1))) == {"1001", "1003"}
    assert sent(redis_client, "patient_removed") == [
        {"date": DAY1, "hpid": store.hpid("502"), "reason": "deleted"}
    ]
    assert not redis_client.exists(keys.appointment_index("1002"))
    assert applied.counts[DAY1].removed == 1


def test_a_patient_with_another_appointment_that_day_stays(
    reconciler: Reconciler, store: ScheduleStore, redis_client: redis.Redis
) -> None:
    read(reconciler, (DAY1, [row(1, DAY1, patient=9), row(2, DAY1, patient=9)], True))
    read(reconciler, (DAY1, [row(2, DAY1, patient=9)], True))

    entry = redis_client.hgetall(keys.patient(store.hpid("509"), DAY1))
    assert entry["appointment_id"] == "1002" and entry["appointment_time"].startswith(f"{DAY1}T09:02")
    assert sent(redis_client, "patient_removed") == []


def test_the_same_full_read_twice_changes_no_byte(reconciler: Reconciler, redis_client: redis.Redis) -> None:
    rows = [row(1, DAY1), row(2, DAY1)]
    read(reconciler, (DAY1, rows, True))
    before = snapshot(redis_client)
    stream_before = redis_client.xlen(keys.AGENT_UPDATES)
    applied = read(reconciler, (DAY1, rows, True))

    assert snapshot(redis_client) == before
    assert redis_client.xlen(keys.AGENT_UPDATES) == stream_before
    assert not applied.counts[DAY1].changed_anything


def test_a_visit_under_way_is_flagged_not_dropped_and_the_clinic_resolves_it(
    reconciler: Reconciler, store: ScheduleStore, flow_: PatientFlow, redis_client: redis.Redis
) -> None:
    read(reconciler, (DAY1, [row(1, DAY1), row(2, DAY1)], True))
    moving, cancelled = store.hpid("501"), store.hpid("502")
    flow_.change_status(DAY1, moving, "arrived")
    flow_.change_status(DAY1, cancelled, "arrived")

    read(reconciler, (DAY2, [row(1, DAY2, modified=LATER)], False))
    flagging = read(
        reconciler,
        (DAY1, [row(2, DAY1, modified=LATER, status="cancelled", tebra_status="Cancelled")], False),
    )
    again = read(
        reconciler, (DAY1, [row(2, DAY1, modified=LATER, status="cancelled", tebra_status="Cancelled")], True)
    )

    moved_entry = redis_client.hgetall(keys.patient(moving, DAY1))
    assert moved_entry["status"] == "arrived"
    assert json.loads(moved_entry["tebra_conflict"]) == {
        "kind": "moved",
        "to_date": DAY2,
        "tebra_status": "Scheduled",
    }
    cancelled_entry = redis_client.hgetall(keys.patient(cancelled, DAY1))
    assert cancelled_entry["status"] == "arrived"
    assert json.loads(cancelled_entry["tebra_conflict"]) == {"kind": "status", "status": "cancelled"}
    # The leave script announces a moved visit itself; a status flag is in the counts, for the caller to
    # announce with the day's other status moves (tasks/sync/announce.py, queue_status_moves).
    assert [f["hpid"] for f in sent(redis_client, "patient_conflict")] == [moving]
    assert [(m.hpid, m.flagged, m.tebra_status) for m in flagging.counts[DAY1].changed_statuses] == [
        (cancelled, True, "cancelled")
    ]
    assert flagging.counts[DAY1].conflicts == 1
    assert not again.counts[DAY1].changed_anything

    flow_.change_status(DAY1, moving, "appt-prep")
    read(
        reconciler, (DAY1, [row(2, DAY1, modified=LATER, status="cancelled", tebra_status="Cancelled")], True)
    )
    board = {r["hpid"]: r for r in flow_.board(DAY1).rows}
    assert board[moving]["tebra_conflict"] is None and board[moving]["status"] == "appt-prep"
    assert board[cancelled]["tebra_conflict"] == {"kind": "status", "status": "cancelled"}
    assert len(sent(redis_client, "patient_conflict")) == 1  # the resolved flag is not raised again


def test_a_read_that_found_nothing_writes_nothing(reconciler: Reconciler, redis_client: redis.Redis) -> None:
    applied = reconciler.apply([], read_started_at=events.utc_now_iso())
    assert applied.counts == {} and applied.stale == 0
    assert redis_client.dbsize() == 0


def test_a_full_read_keeps_the_index_alive_as_long_as_its_day(
    reconciler: Reconciler, redis_client: redis.Redis
) -> None:
    rows = [row(1, DAY1)]
    read(reconciler, (DAY1, rows, True))
    redis_client.expire(keys.appointment_index("1001"), 5)  # an entry near the end of its life
    read(reconciler, (DAY1, rows, True))  # unchanged: no byte rewritten, but the entry lives on
    assert redis_client.ttl(keys.appointment_index("1001")) > 5
    assert redis_client.ttl(keys.appointment_index("1001")) == redis_client.ttl(keys.appointments(DAY1))
