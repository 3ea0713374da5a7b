"""The simulator's bad days through the gateway over real HTTP: each one classified, none unhandled.

A maintenance page, a truncated reply, a dropped connection and an unreachable WSDL are upstream failures
(retryable, counted by the breaker through ``on_call``); an unknown member in GetProviders or GetPatient is
ignored and counted; ``user_not_found`` is a security refusal; a practice name that is not Tebra's exactly
answers nothing; a row that cannot be mapped is set aside and the others are read.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from config.settings import load_settings
from tasks.tebra import client as tebra_client
from tasks.tebra.errors import TebraSecurityError, TebraUpstreamError
from tasks.tebra.gateway import TebraGateway
from tasks.tebra.mapping import clinic_day_bounds

TZ = ZoneInfo("America/Chicago")
WEEKDAY = date(2026, 11, 30)  # a Monday: the simulator books weekdays


class Calls:
    """What the gateway reported: finished calls (operation, outcome) and unknown members."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.unknown: list[tuple[str, str]] = []


def gateway_for(sim: Any, calls: Calls, **settings: Any) -> TebraGateway:
    values = {
        "APP_ENV": "test",
        "TEBRA_WSDL_URL": sim.wsdl_url,
        "TEBRA_THROTTLE_ENABLED": "false",
        **settings,
    }
    return TebraGateway(
        load_settings(values),
        None,
        on_call=lambda op, seconds, outcome: calls.calls.append((op, outcome)),
        on_unknown=lambda op, member: calls.unknown.append((op, member)),
    )


def day(gateway: TebraGateway, when: date = WEEKDAY) -> list[dict[str, Any]]:
    start, end = clinic_day_bounds(when, TZ)
    return gateway.get_appointments(start, end)


@pytest.mark.parametrize("fault", ["maintenance", "truncated", "connection_reset", "internal_fault"])
def test_a_broken_reply_is_an_upstream_failure_and_the_next_call_reads(sim: Any, fault: str) -> None:
    calls = Calls()
    gateway = gateway_for(sim, calls)
    day(gateway)  # the client is built and warm: the fault hits a call, not the WSDL
    # Only this gateway's operation: the session's worker may call Tebra meanwhile (details lookups left by
    # an earlier test), and a fault for "the next call" could be spent on one of those.
    sim.set_faults(**{fault: {"count": 1, "operations": ["GetAppointments"]}})
    with pytest.raises(TebraUpstreamError) as raised:
        day(gateway)
    assert raised.value.retryable and raised.value.operation == "GetAppointments"
    assert calls.calls[-1] == ("GetAppointments", "upstream")
    assert len(day(gateway)) == len(sim.appointments(WEEKDAY.isoformat()))
    assert sim.stats()["faults"].get(fault, 0) == 1


def test_an_unreachable_wsdl_is_an_upstream_failure_until_it_is_back(sim: Any) -> None:
    calls = Calls()
    sim.set_faults(wsdl_unavailable=True)
    # A fresh process: its client is not built yet (a new worker during Tebra's maintenance). zeep's
    # in-memory WSDL cache is per process, so this gateway's WSDL address is one no other test loaded.
    tebra_client.reset()
    gateway = gateway_for(sim, calls, TEBRA_WSDL_URL=f"{sim.wsdl_url}&worker=new")
    with pytest.raises(TebraUpstreamError) as raised:
        day(gateway)
    assert raised.value.retryable and "WSDL" in str(raised.value)
    assert calls.calls == [("WSDL", "upstream")]
    sim.set_faults(wsdl_unavailable=False)
    assert len(day(gateway)) == len(sim.appointments(WEEKDAY.isoformat()))


def test_an_unknown_member_in_providers_and_patient_is_ignored_and_counted(sim: Any) -> None:
    calls = Calls()
    gateway = gateway_for(sim, calls)
    sim.set_faults(unknown_member=True)
    providers = gateway.get_providers()
    assert [p["id"] for p in providers] == [str(p["id"]) for p in sim.clinic()["providers"]]
    patient_id = sim.appointments(WEEKDAY.isoformat())[0]["patient_id"]
    patient = gateway.get_patient(str(patient_id))
    assert patient is not None and patient["id"] == str(patient_id)
    assert set(calls.unknown) == {
        ("GetProviders", "Xsd7PreferredPronoun"),
        ("GetPatient", "Xsd7PreferredPronoun"),
    }
    assert all(outcome == "ok" for _, outcome in calls.calls)


def test_user_not_found_is_a_security_refusal_with_tebras_words(sim: Any) -> None:
    calls = Calls()
    gateway = gateway_for(sim, calls)
    sim.set_faults(security="user_not_found")
    with pytest.raises(TebraSecurityError) as raised:
        day(gateway)
    assert "User not found" in str(raised.value)
    assert calls.calls[-1] == ("GetAppointments", "security")


def test_a_practice_name_not_exactly_tebras_answers_nothing(sim: Any) -> None:
    calls = Calls()
    gateway = gateway_for(sim, calls, TEBRA_PRACTICE_NAME="Lakeside Family Clinic, LLC")
    assert day(gateway) == []
    assert gateway.get_providers() == []
    assert gateway.get_practices() == []


def test_a_row_with_a_date_in_no_known_form_is_set_aside(sim: Any) -> None:
    when = WEEKDAY + timedelta(days=1)
    held = sim.appointments(when.isoformat())
    bad = held[0]["id"]
    sim.set_faults(unreadable_dates=[bad])
    gateway = gateway_for(sim, Calls())
    rows = day(gateway, when)
    assert sorted(a["id"] for a in rows) == sorted(str(a["id"]) for a in held if a["id"] != bad)
    assert [(r.id, r.day) for r in rows.rejected] == [(str(bad), when.isoformat())]  # type: ignore[attr-defined]
