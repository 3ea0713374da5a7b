"""The plain parts of a sync and of patient details on a real Redis: the full/incremental plan, providers
filled from the cache, unknown statuses counted, lookups queued once and written without breaking the
idempotence of write_day, the beat schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from config import load_settings
from tasks import keys, names
from tasks.events import EventPublisher, read_since
from tasks.patients import details
from tasks.phi import PhiCipher, patient_binding
from tasks.providers import cache, fill
from tasks.sync import plan, run, unknown_status
from tasks.sync.reconcile import Reconciler, write_day
from tasks.sync.store import ScheduleStore
from tasks.tebra.errors import TebraBusinessError, TebraUpstreamError
from tests.unit.test_store import DATE, make_appointment
from workers.beat import beat_schedule

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


@pytest.fixture
def store(redis_client: redis.Redis) -> ScheduleStore:
    settings = load_settings({"APP_ENV": "test"})
    return ScheduleStore(
        redis_client, PhiCipher.from_settings(settings), hmac_key="test-key", retention_days=2
    )


class FakeTebra:
    """Providers and patients as the gateway returns them; ``fail`` raises instead."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.provider_calls = 0
        self.patient_calls: list[str] = []

    def get_appointments(self, *_: Any, **__: Any) -> list[dict[str, Any]]:
        return []

    def get_providers(self) -> list[dict[str, Any]]:
        self.provider_calls += 1
        if self.fail:
            raise self.fail
        return [{"id": "7", "full_name": "Dr Provider"}, {"id": "8", "full_name": "Dr Other"}]

    def get_patient(self, patient_id: str) -> dict[str, Any] | None:
        self.patient_calls.append(patient_id)
        if self.fail:
            raise self.fail
        return {"id": patient_id, "dob": "1980-02-03"}


def context(client: redis.Redis, store: ScheduleStore, source: FakeTebra) -> run.SyncContext:
    return run.SyncContext(
        redis=client,
        store=store,
        reconciler=Reconciler(client, store, sender="test", maxlen=1000),
        publisher=EventPublisher(client, sender="test", maxlen=1000),
        source=source,
        clinic_tz=ZoneInfo("America/Chicago"),
        status_ttl_s=600,
        results_maxlen=1000,
        providers=source,
    )


def test_plan_is_full_first_then_incremental_until_the_full_one_ages() -> None:
    assert plan.plan_sync(None, NOW, 3600).mode == plan.FULL
    recent = (NOW - timedelta(minutes=10)).isoformat()
    status = {"last_success_started_at": recent, "last_full_started_at": recent}
    incremental = plan.plan_sync(status, NOW, 3600)
    assert incremental.mode == plan.INCREMENTAL
    assert incremental.modified_since == NOW - timedelta(minutes=10, seconds=plan.MODIFIED_OVERLAP_S)
    old_full = {**status, "last_full_started_at": (NOW - timedelta(hours=2)).isoformat()}
    assert plan.plan_sync(old_full, NOW, 3600).mode == plan.FULL
    assert plan.plan_sync({"last_success_started_at": "garbage"}, NOW, 3600).mode == plan.FULL


def test_providers_fill_missing_names_and_ids_only_when_needed(
    redis_client: redis.Redis, store: ScheduleStore
) -> None:
    source = FakeTebra()
    ctx = context(redis_client, store, source)
    complete = [make_appointment(1)]
    assert fill.fill_providers(ctx, complete) is None and source.provider_calls == 0

    rows = [
        make_appointment(2, provider_name=None),
        make_appointment(3, provider_id=None, provider_name="Dr Other"),
    ]
    assert fill.fill_providers(ctx, rows) is False
    assert rows[0]["provider_name"] == "Dr Provider" and rows[1]["provider_id"] == "8"
    assert source.provider_calls == 1 and cache.read(redis_client) is not None

    again = [make_appointment(4, provider_name=None)]
    assert fill.fill_providers(ctx, again) is False and source.provider_calls == 1  # fresh cache


def test_tebra_down_serves_the_stale_provider_list_flagged(
    redis_client: redis.Redis, store: ScheduleStore
) -> None:
    cache.write(redis_client, [{"id": "7", "full_name": "Dr Provider"}], ttl_s=0)
    source = FakeTebra(fail=TebraUpstreamError("GetProviders: timed out", "GetProviders"))
    rows = [make_appointment(1, provider_name=None)]
    assert fill.fill_providers(context(redis_client, store, source), rows) is True
    assert rows[0]["provider_name"] == "Dr Provider"


def test_unknown_statuses_are_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    unknown_status.reset_seen()
    counter = unknown_status.unknown_status_counter()
    before = counter.labels(status="needsreschedule")._value.get()
    rows: list[dict[str, Any]] = [
        {"tebra_status": "Needs-Reschedule", "status_known": False},
        {"tebra_status": "needs reschedule", "status_known": False},
        {"tebra_status": "Confirmed", "status_known": True},
        {"tebra_status": None, "status_known": False},
    ]
    with caplog.at_level("WARNING", logger="tasks.sync.unknown_status"):
        assert unknown_status.note_unknown_statuses(rows, date=DATE) == 2
    assert counter.labels(status="needsreschedule")._value.get() == before + 2
    assert len([r for r in caplog.records if "ConfirmationStatus" in r.getMessage()]) == 1
    assert unknown_status.status_label("Weird <script> value!") == "other"


def details_ctx(client: redis.Redis, store: ScheduleStore, source: FakeTebra) -> details.DetailsContext:
    return details.DetailsContext(
        redis=client,
        cipher=PhiCipher.from_settings(load_settings({"APP_ENV": "test"})),
        publisher=EventPublisher(client, sender="test", maxlen=1000),
        source=source,
        cache_ttl_s=600,
    )


def test_a_lookup_seals_the_dob_caches_it_and_keeps_write_day_idempotent(
    redis_client: redis.Redis, store: ScheduleStore
) -> None:
    rows = [make_appointment(1), make_appointment(2)]
    write_day(store, DATE, rows)
    hpid = store.hpid("501")
    source = FakeTebra()
    ctx = details_ctx(redis_client, store, source)
    assert details.fetch_details(ctx, DATE, hpid) == "complete"
    entry = redis_client.hgetall(keys.patient(hpid, DATE))
    assert (
        entry["details"] == "complete"
        and ctx.cipher.open(entry["dob"], patient_binding(hpid, "dob", DATE)) == "1980-02-03"
    )
    assert "1980" not in redis_client.get(keys.patient_details(hpid))
    event = read_since(redis_client, "0-0")[-1]
    assert event["type"] == "patient_details_updated" and event["data"] == {
        "date": DATE,
        "hpid": hpid,
        "details": "complete",
    }

    counts = write_day(store, DATE, rows)  # a later sync leaves the details alone
    assert counts.patients_changed == 0 and redis_client.hget(keys.patient(hpid, DATE), "dob") == entry["dob"]
    assert details.fetch_details(ctx, DATE, hpid) == "complete"
    assert source.patient_calls == ["501"]  # the second came from the cache
    assert details.fetch_details(ctx, "2026-01-01", hpid) == "gone"


def test_a_patient_tebra_cannot_give_is_marked_incomplete(
    redis_client: redis.Redis, store: ScheduleStore
) -> None:
    write_day(store, DATE, [make_appointment(1)])
    hpid = store.hpid("501")
    ctx = details_ctx(
        redis_client, store, FakeTebra(fail=TebraBusinessError("GetPatient: error", "GetPatient"))
    )
    with pytest.raises(TebraBusinessError):
        details.fetch_details(ctx, DATE, hpid)
    assert details.mark_incomplete(ctx, DATE, hpid, "TEBRA_ERROR") == "incomplete"
    entry = redis_client.hgetall(keys.patient(hpid, DATE))
    assert entry["details"] == "incomplete" and "dob" not in entry


def test_lookups_are_queued_once_per_patient_and_day(redis_client: redis.Redis, store: ScheduleStore) -> None:
    write_day(store, DATE, [make_appointment(1), make_appointment(2), make_appointment(3, patient_id="501")])
    sent: list[tuple[str, str]] = []
    assert details.enqueue_day(redis_client, DATE, lambda d, h: sent.append((d, h))) == 2
    assert {h for _, h in sent} == {store.hpid("501"), store.hpid("502")}
    assert all(len(hpid) == 24 and int(hpid, 16) >= 0 for _, hpid in sent)  # hpids, never Tebra ids
    assert details.enqueue_day(redis_client, DATE, lambda d, h: sent.append((d, h))) == 0
    for _, hpid in sent:
        details.release(redis_client, DATE, hpid)
    cipher = PhiCipher.from_settings(load_settings({"APP_ENV": "test"}))
    details.write_details(
        redis_client, cipher, DATE, store.hpid("501"), dob="1980-02-03", complete=True, now=NOW.isoformat()
    )
    states = details.details_states(redis_client, DATE)
    assert details.wanted(states, NOW) == [store.hpid("502")]
    recent = {h: ("incomplete", NOW.isoformat()) for h in states}
    assert details.wanted(recent, NOW + timedelta(minutes=5)) == []
    assert len(details.wanted(recent, NOW + timedelta(hours=2))) == 2


def test_beat_schedule_is_off_by_default_and_expires_its_ticks() -> None:
    off = {"APP_ENV": "test", "TEBRA_POLL_INTERVAL_S": "0", "SYNC_SWEEP_INTERVAL_S": "0"}
    assert beat_schedule(load_settings(off)) == {}
    # the watch and the sweep are on by default
    assert set(beat_schedule(load_settings({"APP_ENV": "test"}))) == {"watch-tebra", "sweep-syncs"}
    sweep = beat_schedule(load_settings({"APP_ENV": "test"}))["sweep-syncs"]
    assert sweep["task"] == names.SWEEP == "schedule.sweep"
    assert sweep["schedule"] == timedelta(seconds=60)
    assert sweep["options"] == {"queue": "sync", "expires": 60}
    entry = beat_schedule(load_settings({"APP_ENV": "test", "PERIODIC_SYNC_MINUTES": "5"}))["sync-today"]
    assert entry["task"] == names.PERIODIC_SYNC == "schedule.periodic_sync"
    assert entry["schedule"] == timedelta(minutes=5)
    assert entry["options"] == {"queue": "sync", "expires": 300}
