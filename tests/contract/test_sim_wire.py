"""The simulator on the wire: its own WSDL, WCF's reading and writing habits, the admin API, the process."""

from __future__ import annotations

import re
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests
import zeep

from config import load_settings
from tebra_sim.schema import SERVED_OPERATIONS, WSDL_PATH, load_schema
from tests.support.real_tebra import real_wsdl_path, require_real_file
from tests.support.simulator import Simulator, start_simulator

ACTION = "http://www.kareo.com/api/schemas/KareoServices/"
SETTINGS = load_settings({"APP_ENV": "test"})
HEADER = (
    f"<RequestHeader><CustomerKey>{SETTINGS.tebra_customer_key}</CustomerKey>"
    f"<Password>{SETTINGS.tebra_password}</Password><User>{SETTINGS.tebra_user}</User></RequestHeader>"
)


def soap(operation: str, request_xml: str, action: str | None = "default", soap_header: str = "") -> str:
    return (
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
        f"<s:Header>{soap_header}</s:Header><s:Body>"
        f'<{operation} xmlns="http://www.kareo.com/api/schemas/"><request>{request_xml}</request></{operation}>'
        "</s:Body></s:Envelope>"
    )


def post(sim: Simulator, body: str, action: str | None, timeout: float = 5) -> requests.Response:
    headers = {"Content-Type": "text/xml; charset=utf-8"}
    if action is not None:
        headers["SOAPAction"] = f'"{action}"'
    return requests.post(sim.endpoint_url, data=body.encode(), headers=headers, timeout=timeout)


def test_own_wsdl_points_zeep_back_at_the_host_it_was_fetched_from(sim: Simulator) -> None:
    wsdl = requests.get(f"http://localhost:{sim.port}/KareoServices.svc?wsdl", timeout=5).text
    assert f'location="http://localhost:{sim.port}/KareoServices.svc"' in wsdl
    client = zeep.Client(sim.wsdl_url)  # no create_service needed: the address is already ours
    kareo = client.type_factory("http://www.kareo.com/api/schemas/")
    header = kareo.RequestHeader(
        CustomerKey=SETTINGS.tebra_customer_key, Password=SETTINGS.tebra_password, User=SETTINGS.tebra_user
    )
    result = client.service.GetThrottles(request=kareo.GetThrottlesReq(RequestHeader=header))
    assert result.ErrorResponse.IsError is False
    assert sorted(client.service._operations) == sorted(SERVED_OPERATIONS)


def test_own_wsdl_has_the_real_element_order_for_every_type() -> None:
    real_xsd = require_real_file(real_wsdl_path().with_name("KareoServices.svc.xsd0.xsd"))
    ours = load_schema(WSDL_PATH).types
    real = load_schema(real_xsd).types
    assert len(ours) > 30
    for key, members in ours.items():
        if key in real:  # the arrays namespace lives in another real file
            assert [m.name for m in members] == [m.name for m in real[key]], key
            assert [(m.type_name, m.nillable, m.min_occurs) for m in members] == [
                (m.type_name, m.nillable, m.min_occurs) for m in real[key]
            ], key


def test_answers_are_shaped_like_wcf(sim: Simulator) -> None:
    answer = post(sim, soap("GetThrottles", HEADER), f"{ACTION}GetThrottles")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/xml")
    text = answer.text
    assert text.startswith('<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>')
    assert '<GetThrottlesResponse xmlns="http://www.kareo.com/api/schemas/">' in text
    assert '<GetThrottlesResult xmlns:i="http://www.w3.org/2001/XMLSchema-instance">' in text
    assert (
        '<ErrorResponse><ErrorMessage i:nil="true"/><IsError>false</IsError><StackTrace i:nil="true"/>'
        in text
    )
    assert text.index("<ErrorResponse>") < text.index("<SecurityResponse>") < text.index("<ThrottleDetails>")
    assert (
        '<PracticeID xmlns:a="http://schemas.microsoft.com/2003/10/Serialization/Arrays"><a:int>1</a:int>'
        in text
    )


def test_soap_header_content_is_ignored_and_body_routes_without_soapaction(sim: Simulator) -> None:
    addressing = (
        '<wsa:Action xmlns:wsa="http://www.w3.org/2005/08/addressing">x</wsa:Action>'
        '<wsa:MessageID xmlns:wsa="http://www.w3.org/2005/08/addressing">urn:uuid:1</wsa:MessageID>'
    )
    answer = post(sim, soap("GetThrottles", HEADER, soap_header=addressing), None)
    assert answer.status_code == 200 and "<IsError>false</IsError>" in answer.text


def test_members_out_of_order_are_dropped_like_wcf(sim: Simulator) -> None:
    # User before Password: WCF keeps User, then drops Password (it comes after), so the login fails.
    swapped = (
        f"<RequestHeader><CustomerKey>{SETTINGS.tebra_customer_key}</CustomerKey>"
        f"<User>{SETTINGS.tebra_user}</User><Password>{SETTINGS.tebra_password}</Password></RequestHeader>"
    )
    answer = post(sim, soap("GetThrottles", swapped), f"{ACTION}GetThrottles")
    assert "<Authenticated>false</Authenticated>" in answer.text
    # Unknown members are skipped, and ConfirmationStatus after PracticeName is out of order: dropped, so the
    # day's rows come back whatever their status.
    day = datetime.fromisoformat(sim.health()["now"]).date()
    while day.weekday() >= 5:
        day += timedelta(days=1)
    us = f"{day.month}/{day.day}/{day.year}"
    body = soap(
        "GetAppointments",
        HEADER
        + f"<Bogus>1</Bogus><Fields/><Filter><EndDate>{us}</EndDate>"
        + f"<PracticeName>{SETTINGS.tebra_practice_name}</PracticeName>"
        + f"<StartDate>{us}</StartDate><ConfirmationStatus>Nope</ConfirmationStatus></Filter>",
    )
    answer = post(sim, body, f"{ACTION}GetAppointments")
    assert answer.text.count("<AppointmentData>") == len(sim.appointments(day)) > 0
    # A required member (Fields) skipped: WCF's deserializer refuses the whole message.
    late = soap("GetAppointments", HEADER + "<Filter><PracticeName>x</PracticeName></Filter><Fields/>")
    answer = post(sim, late, f"{ACTION}GetAppointments")
    assert answer.status_code == 500 and "a:DeserializationFailed" in answer.text
    assert "Expecting element 'Fields'" in answer.text


def test_nil_filter_is_the_null_reference_error(sim: Simulator) -> None:
    body = soap("GetAppointments", HEADER + '<Fields i:nil="true"/><Filter i:nil="true"/>')
    answer = post(sim, body, f"{ACTION}GetAppointments")
    assert answer.status_code == 200
    assert "<IsError>true</IsError>" in answer.text and "ValidateDateTimeFields" in answer.text


def test_unknown_action_and_unreadable_envelopes_are_faults(sim: Simulator) -> None:
    answer = post(sim, soap("GetThrottles", HEADER), f"{ACTION}GetCharges")
    assert answer.status_code == 500 and "a:ActionNotSupported" in answer.text
    answer = post(sim, soap("GetThrottles", HEADER), f"{ACTION}GetProviders")  # action and body disagree
    assert answer.status_code == 500 and "a:ActionNotSupported" in answer.text
    answer = post(sim, "<not-soap/>", f"{ACTION}GetThrottles")
    assert answer.status_code == 500 and "a:DeserializationFailed" in answer.text
    assert sim.stats()["faults"] == {"action_not_supported": 2, "deserialization_failed": 1}


def test_fixed_latency_slow_window_and_hang(sim: Simulator) -> None:
    body, action = soap("GetThrottles", HEADER), f"{ACTION}GetThrottles"
    sim.set_faults(latency_ms=150)
    started = time.perf_counter()
    post(sim, body, action)
    assert time.perf_counter() - started >= 0.15
    sim.set_faults(latency_ms=0, slow={"seconds": 30, "delay_ms": 200})
    started = time.perf_counter()
    post(sim, body, action)
    assert time.perf_counter() - started >= 0.2
    sim.set_faults(slow=None, latency_distribution={"median_ms": 5, "p95_ms": 20})
    assert post(sim, body, action).status_code == 200
    sim.set_faults(latency_distribution=None, hang={"seconds": 2, "count": 1})
    with pytest.raises(requests.ReadTimeout):
        post(sim, body, action, timeout=0.3)
    started = time.perf_counter()
    assert post(sim, body, action).status_code == 200  # only the next call hung
    assert time.perf_counter() - started < 1.5
    assert sim.stats()["faults"]["hang"] == 1


def test_admin_refuses_what_it_cannot_apply(sim: Simulator) -> None:
    bad = requests.post(f"{sim.base_url}/_sim/faults", json={"throttle_shape": "smoke"}, timeout=5)
    assert bad.status_code == 400 and "throttle_shape" in bad.json()["error"]
    assert sim.faults()["throttle_shape"] == "error_response"  # nothing applied
    bad = requests.post(f"{sim.base_url}/_sim/faults", json={"latency_ms": 5, "colour": "red"}, timeout=5)
    assert bad.status_code == 400 and sim.faults()["latency_ms"] == 0  # all or nothing
    bad = requests.post(f"{sim.base_url}/_sim/appointments", json={"action": "status", "id": 1}, timeout=5)
    assert bad.status_code == 400
    assert requests.get(f"{sim.base_url}/_sim/nothing", timeout=5).status_code == 404


def test_reset_returns_to_the_seed(sim: Simulator) -> None:
    day = datetime.fromisoformat(sim.health()["now"]).date() + timedelta(days=7)  # same weekday, a week on
    while day.weekday() >= 5:
        day += timedelta(days=1)
    before = sim.appointments(day)
    sim.edit_appointment("cancel", id=before[0]["id"])
    sim.set_faults(security="bad_password")
    post(sim, soap("GetThrottles", HEADER), f"{ACTION}GetThrottles")
    sim.reset()
    assert sim.appointments(day) == before
    assert sim.faults()["security"] is None
    assert sim.stats()["calls"] == {}


def test_log_has_one_line_per_call_and_no_patient_names(sim: Simulator) -> None:
    day = datetime.fromisoformat(sim.health()["now"]).date()
    body = soap(
        "GetAppointments",
        HEADER + f"<Fields/><Filter><EndDate>{day.month}/{day.day}/{day.year}</EndDate></Filter>",
    )
    answer = post(sim, body, f"{ACTION}GetAppointments")
    names = set(re.findall(r"<PatientFullName>([^<]+)</PatientFullName>", answer.text))
    assert names
    time.sleep(0.1)
    log = Path(sim.log).read_text()
    assert re.search(r"GetAppointments 200 ok \d+\.\dms", log)
    assert not any(name in log for name in names)


def test_sigterm_stops_the_process_cleanly() -> None:
    with start_simulator(throttle=False) as running:
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(5) == 0
        assert "tebra_sim stopped" in Path(running.log).read_text()
