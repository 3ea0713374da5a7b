"""The gateway against the Tebra simulator over real HTTP: data round trips and every failure shape.

Each test starts from a reset simulator (throttle off unless the test turns it on) and builds its own
zeep client from the simulator's WSDL, the way a worker does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

from config.settings import Settings, load_settings
from tasks import keys
from tasks.tebra import client as tebra_client
from tasks.tebra.errors import TebraBusinessError, TebraSecurityError, TebraThrottled, TebraUpstreamError
from tasks.tebra.gateway import TebraGateway
from tasks.tebra.mapping import clinic_day_bounds, parse_tebra_datetime
from tasks.tebra.throttle import TebraThrottle
from tests.support.processes import free_port
from tests.support.simulator import Simulator, start_simulator


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """The simulator as a subprocess over real HTTP, stopped by pid afterwards."""
    with start_simulator(throttle=False) as running:
        yield running


@pytest.fixture
def fresh_sim(sim: Simulator) -> Simulator:
    """The simulator reset to its seed data, throttle off, no faults, counters at zero."""
    sim.reset()
    sim.set_faults(throttle=False)
    return sim


def make_settings(sim: Simulator, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"tebra_wsdl_url": sim.wsdl_url, "tebra_operation_timeout_s": 5.0, **overrides}
    return load_settings(environ={"APP_ENV": "test"}, **values)


def make_gateway(sim: Simulator, *, throttle: TebraThrottle | None = None, **kwargs: Any) -> TebraGateway:
    """A gateway on its own client for ``sim`` (Tebra's throttle answers not retried unless asked)."""
    settings = kwargs.pop("settings", None) or make_settings(sim)
    kwargs.setdefault("throttle_retries", 0)
    return TebraGateway(settings, throttle=throttle, client=tebra_client.build_client(settings), **kwargs)


# --- data round trips -----------------------------------------------------------------------------


# Daylight-saving Sundays (the seed books weekdays only): appointments added around the change, plus one at
# the next midnight, which belongs to the next day.
EXTRA = {
    date(2026, 3, 8): [
        "2026-03-08T00:30:00",
        "2026-03-08T03:30:00",
        "2026-03-08T23:30:00",
        "2026-03-09T00:00:00",
    ],
    date(2026, 11, 1): [
        "2026-11-01T00:30:00",
        "2026-11-01T01:30:00",
        "2026-11-01T23:30:00",
        "2026-11-02T00:00:00",
    ],
}


@pytest.mark.parametrize("day", [date(2026, 3, 8), date(2026, 11, 1), date(2026, 6, 16)])
def test_get_appointments_for_a_day_equals_the_simulator(fresh_sim: Simulator, day: date) -> None:
    gateway = make_gateway(fresh_sim)
    patient_id = fresh_sim.appointments(date(2026, 6, 16))[0]["patient_id"]
    for start_local in EXTRA.get(day, []):
        fresh_sim.edit_appointment("add", patient_id=patient_id, start=start_local, duration_minutes=60)
    tz = ZoneInfo(gateway.settings.clinic_tz)
    start, end = clinic_day_bounds(day, tz)
    got = {a["id"]: a for a in gateway.get_appointments(start, end)}
    expected = {str(a["id"]): a for a in fresh_sim.appointments(day)}
    assert got.keys() == expected.keys()
    assert got, "the simulator seeds appointments every day"
    for appointment_id, want in expected.items():
        have = got[appointment_id]
        wire = want["wire"]
        assert have["patient_id"] == str(want["patient_id"])
        assert have["patient_name"] == want["patient_full_name"]
        assert have["provider_id"] == str(want["provider_id"])
        assert have["provider_name"] == want["provider_full_name"]
        assert have["location"] == want["location_name"]
        assert have["tebra_status"] == wire["ConfirmationStatus"]
        assert have["reason"] == wire["AppointmentReason1"]
        assert have["start"] == _iso(wire["StartDate"], tz)
        assert have["end"] == _iso(wire["EndDate"], tz)
        starts = parse_tebra_datetime(wire["StartDate"], tz)
        assert starts is not None and start <= starts < end


def _iso(raw: str, tz: ZoneInfo) -> str:
    parsed = parse_tebra_datetime(raw, tz)
    assert parsed is not None
    return parsed.isoformat(timespec="seconds")


@pytest.mark.parametrize("mode", ["empty_result", "toggles"])
def test_placeholder_rows_never_reach_the_caller(fresh_sim: Simulator, mode: str) -> None:
    gateway = make_gateway(fresh_sim)
    day = date(2026, 6, 16)
    fresh_sim.set_faults(placeholder_row=mode)
    start, end = clinic_day_bounds(day, ZoneInfo(gateway.settings.clinic_tz))
    assert all(a["id"] for a in gateway.get_appointments(start, end))


def test_providers_patient_and_throttles(fresh_sim: Simulator, r: redis.Redis) -> None:
    throttle = TebraThrottle(r, margin=0.0, enabled=True)
    gateway = make_gateway(fresh_sim, throttle=throttle)
    clinic = fresh_sim.clinic()
    providers = gateway.get_providers()
    assert {p["id"] for p in providers} == {str(p["id"]) for p in clinic["providers"]}
    assert all(p["full_name"] for p in providers)

    some = fresh_sim.appointments(date(2026, 6, 16))[0]
    patient = gateway.get_patient(str(some["patient_id"]))
    assert patient is not None
    assert patient["id"] == str(some["patient_id"])
    assert patient["full_name"] == some["patient_full_name"]
    assert patient["dob"] and len(patient["dob"]) == 10
    with pytest.raises(TebraBusinessError) as info:
        gateway.get_patient("999999999")
    assert "999999999" not in str(info.value)  # Tebra's text is withheld unless known to be PHI-free

    intervals = gateway.refresh_throttles()
    assert intervals["GetAppointments"] == 1000
    assert intervals["GetPatient"] == 250
    assert r.hget(keys.throttle_intervals(), "GetThrottles") == "5000"


# --- failures ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["error_response", "http_429", "out_of_order"])
def test_each_throttle_shape_is_classified(fresh_sim: Simulator, shape: str) -> None:
    outcomes: list[str] = []
    gateway = make_gateway(fresh_sim, on_call=lambda op, s, outcome: outcomes.append(outcome))
    fresh_sim.set_faults(throttle=True, throttle_shape=shape)
    gateway.get_providers()
    with pytest.raises(TebraThrottled) as info:
        gateway.get_providers()
    assert info.value.interval_ms == 500
    assert info.value.operation == "GetProviders"
    assert outcomes == ["ok", "throttled"]


def test_a_throttled_call_is_retried_after_tebra_s_interval(fresh_sim: Simulator) -> None:
    outcomes: list[str] = []
    gateway = make_gateway(
        fresh_sim, throttle_retries=2, on_call=lambda op, s, outcome: outcomes.append(outcome)
    )
    fresh_sim.set_faults(throttle=True)
    gateway.get_providers()
    assert gateway.get_providers()
    assert outcomes == ["ok", "throttled", "ok"]


def test_the_shared_throttle_keeps_tebra_from_throttling(fresh_sim: Simulator, r: redis.Redis) -> None:
    waits: list[float] = []
    settings = make_settings(fresh_sim, tebra_throttle_margin=0.08)
    throttle = TebraThrottle.from_settings(r, settings)
    gateway = make_gateway(
        fresh_sim, settings=settings, throttle=throttle, on_wait=lambda op, seconds: waits.append(seconds)
    )
    fresh_sim.set_faults(throttle=True)
    appointment = fresh_sim.appointments(date(2026, 6, 16))[0]
    started = time.monotonic()
    for _ in range(6):
        gateway.get_patient(str(appointment["patient_id"]))
    elapsed = time.monotonic() - started
    stats = fresh_sim.stats()
    assert stats["throttle_violations"] == 0
    assert stats["accepted"]["GetPatient"] == 6
    assert elapsed >= 5 * 0.27 - 0.01
    assert waits[0] == 0 and all(w > 0 for w in waits[1:])


@pytest.mark.parametrize("mode", ["bad_password", "bad_customer_key", "permissions_missing"])
def test_security_failures_are_fatal_and_never_leak_the_password(fresh_sim: Simulator, mode: str) -> None:
    outcomes: list[str] = []
    gateway = make_gateway(fresh_sim, on_call=lambda op, s, outcome: outcomes.append(outcome))
    fresh_sim.set_faults(security=mode)
    with pytest.raises(TebraSecurityError) as info:
        gateway.get_providers()
    assert gateway.settings.tebra_password not in str(info.value)
    assert info.value.retryable is False
    assert outcomes == ["security"]


def test_wrong_password_for_real(fresh_sim: Simulator) -> None:
    settings = make_settings(fresh_sim, tebra_password="not-the-password-123")
    gateway = make_gateway(fresh_sim, settings=settings)
    with pytest.raises(TebraSecurityError, match="Authenticated=false") as info:
        gateway.get_providers()
    assert "not-the-password-123" not in str(info.value)


def test_internal_service_fault_is_upstream_and_reported(fresh_sim: Simulator) -> None:
    calls: list[tuple[str, str]] = []
    gateway = make_gateway(fresh_sim, on_call=lambda op, s, outcome: calls.append((op, outcome)))
    fresh_sim.set_faults(internal_fault={"count": 1, "operations": ["GetAppointments"]})
    start, end = clinic_day_bounds(date(2026, 6, 16), ZoneInfo(gateway.settings.clinic_tz))
    with pytest.raises(TebraUpstreamError, match="InternalServiceFault"):
        gateway.get_appointments(start, end)
    assert gateway.get_appointments(start, end)  # the fault was for one call only
    assert calls == [("GetAppointments", "upstream"), ("GetAppointments", "ok")]


def test_a_hung_call_times_out_as_upstream(fresh_sim: Simulator) -> None:
    settings = make_settings(fresh_sim, tebra_operation_timeout_s=0.5)
    seconds: list[float] = []
    gateway = make_gateway(fresh_sim, settings=settings, on_call=lambda op, s, outcome: seconds.append(s))
    fresh_sim.set_faults(hang={"seconds": 3, "count": 1, "operations": ["GetProviders"]})
    with pytest.raises(TebraUpstreamError, match="timed out"):
        gateway.get_providers()
    assert 0.4 < seconds[0] < 2.5


def test_nothing_listening_is_upstream(fresh_sim: Simulator) -> None:
    settings = make_settings(
        fresh_sim, tebra_endpoint_url=f"http://127.0.0.1:{free_port()}/KareoServices.svc"
    )
    gateway = make_gateway(fresh_sim, settings=settings)
    with pytest.raises(TebraUpstreamError, match="connection failed"):
        gateway.get_providers()


def test_a_range_tebra_refuses_is_fetched_in_31_day_calls(fresh_sim: Simulator) -> None:
    gateway = make_gateway(fresh_sim)
    fresh_sim.set_faults(max_range_days=40)
    tz = ZoneInfo(gateway.settings.clinic_tz)
    start, _ = clinic_day_bounds(date(2026, 6, 1), tz)
    _, end = clinic_day_bounds(date(2026, 7, 31), tz)  # 61 days: 31 + 30
    rows = gateway.get_appointments(start, end)
    assert fresh_sim.stats()["accepted"]["GetAppointments"] == 2
    assert len(rows) == len({a["id"] for a in rows})


def test_debug_logging_never_writes_the_envelopes(
    fresh_sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """LOG_LEVEL=DEBUG used to print every SOAP envelope (zeep): the Tebra password, the customer key and the
    replies' names. Now the body-logging libraries speak at WARNING at most, whatever the level."""
    import logging

    from tasks import logs

    settings = make_settings(fresh_sim, log_level="DEBUG")
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        logs.configure_logging(settings, "worker")
        logging.getLogger("zeep.transports").setLevel(logging.DEBUG)  # someone lowers it: still nothing
        start, end = clinic_day_bounds(date(2026, 6, 16), ZoneInfo(settings.clinic_tz))
        rows = make_gateway(fresh_sim, settings=settings).get_appointments(start, end)
        logging.getLogger("tasks").debug("a debug line of our own still gets through")
    finally:
        root.handlers = saved
        root.setLevel(level)
    written = capsys.readouterr().err
    assert rows and "a debug line of our own" in written
    for secret in (settings.tebra_password, settings.tebra_customer_key, rows[0]["patient_name"], "Envelope"):
        assert secret not in written
