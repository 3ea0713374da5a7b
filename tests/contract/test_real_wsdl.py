"""The simulator against Tebra's real WSDL: it must read what the real schema makes zeep send, and answer
what parses under the real schema, in every success and failure shape the project has to handle."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from typing import Any

import pytest
import requests
import zeep
from zeep.exceptions import Fault, XMLParseError
from zeep.proxy import ServiceProxy

from config import load_settings
from tests.support.simulator import Simulator

THROTTLE_TEXT = "requested more than allowed"


def workday(sim: Simulator) -> date:
    day = datetime.fromisoformat(sim.health()["now"]).date()
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def us(day: date) -> str:
    return f"{day.month}/{day.day}/{day.year}"


def appointments_request(kareo: Any, header: Any, day: date, **filters: Any) -> Any:
    return kareo.GetAppointmentsReq(
        RequestHeader=header,
        Fields=kareo.AppointmentFieldsToReturn(),
        Filter=kareo.AppointmentFilter(
            PracticeName=load_settings({"APP_ENV": "test"}).tebra_practice_name,
            StartDate=us(day),
            EndDate=us(day),
            **filters,
        ),
    )


# --- every served operation, through the real schema ---


def test_get_appointments(service: ServiceProxy, kareo: Any, header: Any, sim: Simulator) -> None:
    day = workday(sim)
    result = service.GetAppointments(request=appointments_request(kareo, header, day))
    assert result.ErrorResponse.IsError is False
    assert result.SecurityResponse.Authenticated is True
    assert result.SecurityResponse.SecurityResultSuccess is True
    assert result.SecurityResponse.PracticesAuthorized.PracticeID.int == [1]
    rows = result.Appointments.AppointmentData
    held = sim.appointments(day)
    assert [row.ID for row in rows] == [str(item["id"]) for item in held]
    first = rows[0]
    assert first.PracticeName == load_settings({"APP_ENV": "test"}).tebra_practice_name
    assert first.ResourceTypeID1 == "1" and first.ResourceName1 == held[0]["provider_full_name"]
    assert datetime.strptime(first.StartDate, "%m/%d/%Y %I:%M:%S %p") == datetime.fromisoformat(
        held[0]["start"]
    )
    assert all(isinstance(row.PatientID, str) for row in rows)


def test_get_providers(service: ServiceProxy, kareo: Any, header: Any, sim: Simulator) -> None:
    result = service.GetProviders(
        request=kareo.GetProvidersReq(
            RequestHeader=header,
            Fields=kareo.ProviderFieldsToReturn(ID=True, FullName=True, Active=True),
            Filter=kareo.ProviderFilter(PracticeName=load_settings({"APP_ENV": "test"}).tebra_practice_name),
        )
    )
    assert result.ErrorResponse.IsError is False
    rows = result.Providers.ProviderData
    assert [(row.ID, row.FullName) for row in rows] == [
        (str(p["id"]), p["full_name"]) for p in sim.clinic()["providers"]
    ]
    assert {row.Active for row in rows} == {"True"}
    assert rows[0].NationalProviderIdentifier is None  # not requested


def test_get_practices(service: ServiceProxy, kareo: Any, header: Any) -> None:
    name = load_settings({"APP_ENV": "test"}).tebra_practice_name
    result = service.GetPractices(
        request=kareo.GetPracticesReq(
            RequestHeader=header, Fields=None, Filter=kareo.PracticeFilter(PracticeName=name.lower())
        )
    )
    assert result.ErrorResponse.IsError is False
    (practice,) = result.Practices.PracticeData
    assert (practice.ID, practice.PracticeName, practice.Active) == ("1", name, "True")


def test_get_patient(service: ServiceProxy, kareo: Any, header: Any, sim: Simulator) -> None:
    held = sim.appointments(workday(sim))[0]
    result = service.GetPatient(
        request=kareo.GetPatientReq(
            RequestHeader=header, Filter=kareo.SinglePatientFilter(PatientID=held["patient_id"])
        )
    )
    assert result.ErrorResponse.IsError is False
    patient = result.Patient
    assert str(held["patient_id"]) == patient.ID
    assert patient.PatientFullName == held["patient_full_name"]
    dob = datetime.strptime(patient.DOB, "%m/%d/%Y %I:%M:%S %p")
    assert dob.time() == datetime.min.time() and dob.year >= 1935
    assert patient.HomePhone and patient.MobilePhone and patient.Gender in {"Female", "Male"}
    assert patient.Cases.PatientCaseData[0].IsPrimaryCase is True


def test_get_patient_unknown_id_is_an_error(service: ServiceProxy, kareo: Any, header: Any) -> None:
    result = service.GetPatient(
        request=kareo.GetPatientReq(RequestHeader=header, Filter=kareo.SinglePatientFilter(PatientID=1))
    )
    assert result.ErrorResponse.IsError is True
    assert result.Patient is None


def test_get_throttles(service: ServiceProxy, kareo: Any, header: Any) -> None:
    result = service.GetThrottles(request=kareo.GetThrottlesReq(RequestHeader=header))
    table = {row.Endpoint: row.ThrottleTimeMs for row in result.ThrottleDetails.ThrottleDetail}
    assert table["GetAppointments"] == 1000.0
    assert table["GetPatient"] == 250.0
    assert table["GetProviders"] == table["GetPractices"] == table["GetAppointment"] == 500.0
    assert table["GetAllPatients"] == table["GetThrottles"] == 5000.0


# --- throttles: the three shapes, as zeep sees them ---


def _two_quick_calls(service: ServiceProxy, kareo: Any, header: Any) -> Any:
    request = kareo.GetThrottlesReq(RequestHeader=header)
    first = service.GetThrottles(request=request)
    assert first.ErrorResponse.IsError is False
    return service.GetThrottles(request=request)


def test_throttle_default_shape_is_an_error_response(
    service: ServiceProxy, kareo: Any, header: Any, sim: Simulator
) -> None:
    sim.set_faults(throttle=True)
    second = _two_quick_calls(service, kareo, header)
    assert second.ErrorResponse.IsError is True
    assert second.ErrorResponse.ErrorMessage == (
        "429: GetThrottles endpoint requested more than allowed over time interval 5000 milliseconds. "
        "Please wait to try again."
    )
    assert second.ThrottleDetails is None
    stats = sim.stats()
    assert stats["throttled"] == {"GetThrottles": 1} and stats["accepted"] == {"GetThrottles": 1}


def test_throttle_as_http_429_is_a_zeep_fault(
    service: ServiceProxy, kareo: Any, header: Any, sim: Simulator
) -> None:
    sim.set_faults(throttle=True, throttle_shape="http_429")
    with pytest.raises(Fault) as raised:
        _two_quick_calls(service, kareo, header)
    detail = raised.value.detail
    assert THROTTLE_TEXT in (detail.decode() if isinstance(detail, bytes) else str(detail))


def test_throttle_out_of_order_is_an_xml_parse_error(
    service: ServiceProxy, kareo: Any, header: Any, sim: Simulator
) -> None:
    sim.set_faults(throttle=True, throttle_shape="out_of_order")
    with pytest.raises(XMLParseError, match=r"Unexpected element.*ErrorMessage"):
        _two_quick_calls(service, kareo, header)


def test_throttle_admits_again_after_the_interval_per_operation(
    service: ServiceProxy, kareo: Any, header: Any, sim: Simulator
) -> None:
    sim.set_faults(throttle=True)
    request = kareo.GetPatientReq(RequestHeader=header, Filter=kareo.SinglePatientFilter(PatientID=20001))
    assert service.GetPatient(request=request).ErrorResponse.IsError is False
    assert service.GetPatient(request=request).ErrorResponse.IsError is True  # within 250 ms
    # Another operation has its own window.
    assert _two_quick_calls(service, kareo, header).ErrorResponse.IsError is True
    time.sleep(0.3)
    assert service.GetPatient(request=request).ErrorResponse.IsError is False
    stats = sim.stats()
    assert stats["accepted"]["GetPatient"] == 2 and stats["throttled"]["GetPatient"] == 1
    gaps = stats["accepted_at"]["GetPatient"]
    assert gaps[1] - gaps[0] >= 0.25


# --- security shapes (HTTP 200) ---


@pytest.mark.parametrize(
    ("mode", "authenticated", "key_valid", "result_text"),
    [
        ("bad_password", False, True, "Invalid user name and/or password"),
        ("bad_customer_key", False, False, "Invalid customer key"),
        ("permissions_missing", True, True, None),
    ],
)
def test_security_failures(
    service: ServiceProxy,
    kareo: Any,
    header: Any,
    sim: Simulator,
    mode: str,
    authenticated: bool,
    key_valid: bool,
    result_text: str | None,
) -> None:
    sim.set_faults(security=mode)
    result = service.GetAppointments(request=appointments_request(kareo, header, workday(sim)))
    security = result.SecurityResponse
    assert result.ErrorResponse.IsError is False
    assert security.SecurityResultSuccess is False and security.Authorized is False
    assert (security.Authenticated, security.CustomerKeyValid) == (authenticated, key_valid)
    if result_text:
        assert security.SecurityResult == result_text
    else:
        assert security.PermissionsMissing.Permission.string == ["AppointmentsRead"]
    assert result.Appointments is None
    assert sim.stats()["security_failures"] == {"GetAppointments": 1}


def test_real_wrong_password_is_refused(service: ServiceProxy, kareo: Any, sim: Simulator) -> None:
    settings = load_settings({"APP_ENV": "test"})
    wrong = kareo.RequestHeader(
        CustomerKey=settings.tebra_customer_key, Password="nope", User=settings.tebra_user
    )
    result = service.GetAppointments(request=appointments_request(kareo, wrong, workday(sim)))
    assert result.SecurityResponse.Authenticated is False
    assert result.SecurityResponse.CustomerKeyValid is True
    assert result.Appointments is None


# --- faults and business errors ---


def test_internal_service_fault_for_the_next_call_only(
    service: ServiceProxy, kareo: Any, header: Any, sim: Simulator
) -> None:
    sim.set_faults(internal_fault={"count": 1, "operations": ["GetAppointments"]})
    request = appointments_request(kareo, header, workday(sim))
    assert (
        service.GetThrottles(request=kareo.GetThrottlesReq(RequestHeader=header)).ErrorResponse.IsError
        is False
    )
    with pytest.raises(Fault) as raised:
        service.GetAppointments(request=request)
    assert raised.value.code == "a:InternalServiceFault"
    assert raised.value.message.startswith(
        "The server was unable to process the request due to an internal error."
    )
    assert service.GetAppointments(request=request).ErrorResponse.IsError is False
    assert sim.stats()["faults"] == {"internal_fault": 1}


def test_missing_filter_is_a_null_reference(service: ServiceProxy, kareo: Any, header: Any) -> None:
    result = service.GetAppointments(
        request=kareo.GetAppointmentsReq(RequestHeader=header, Fields=kareo.AppointmentFieldsToReturn())
    )
    assert result.ErrorResponse.IsError is True
    assert result.ErrorResponse.ErrorMessage == "Object reference not set to an instance of an object."
    assert "ValidationHelper.ValidateDateTimeFields" in result.ErrorResponse.StackTrace
    assert result.Appointments is None


def test_unreadable_date_is_an_error_response(
    service: ServiceProxy, kareo: Any, header: Any, sim: Simulator
) -> None:
    request = appointments_request(kareo, header, workday(sim))
    request.Filter.StartDate = "the day after tomorrow"
    result = service.GetAppointments(request=request)
    assert result.ErrorResponse.IsError is True
    assert result.ErrorResponse.ErrorMessage == "String was not recognized as a valid DateTime."


def test_range_above_sixty_days_is_an_internal_service_fault(
    service: ServiceProxy, kareo: Any, header: Any, sim: Simulator
) -> None:
    request = appointments_request(kareo, header, date(2026, 1, 1))
    request.Filter.EndDate = "3/1/2026"  # 59 days and the last day: allowed
    assert service.GetAppointments(request=request).ErrorResponse.IsError is False
    request.Filter.EndDate = "3/3/2026"
    with pytest.raises(Fault, match="internal error"):
        service.GetAppointments(request=request)
    sim.set_faults(max_range_days=90)
    assert service.GetAppointments(request=request).ErrorResponse.IsError is False


def test_placeholder_row_quirks(service: ServiceProxy, kareo: Any, header: Any, sim: Simulator) -> None:
    saturday = date(2026, 3, 7)
    sim.set_faults(placeholder_row="empty_result")
    rows = service.GetAppointments(
        request=appointments_request(kareo, header, saturday)
    ).Appointments.AppointmentData
    assert len(rows) == 1 and not rows[0].ID
    sim.set_faults(placeholder_row="toggles")
    request = appointments_request(kareo, header, workday(sim))
    request.Fields = kareo.AppointmentFieldsToReturn(ID=True, StartDate=True)
    rows = service.GetAppointments(request=request).Appointments.AppointmentData
    assert len(rows) == 1 and not rows[0].ID and rows[0].StartDate is None


def test_wrong_soap_action_is_action_not_supported(
    real_client: zeep.Client, sim: Simulator, header: Any
) -> None:
    # The body the real schema produces, sent under an action that lacks the KareoServices/ segment.
    port = real_client.wsdl.services["KareoServices"].ports["BasicHttpBinding_KareoServices"]
    kareo = real_client.type_factory("http://www.kareo.com/api/schemas/")
    envelope = real_client.create_message(
        ServiceProxy(real_client, port.binding, address=sim.endpoint_url),
        "GetThrottles",
        request=kareo.GetThrottlesReq(RequestHeader=header),
    )
    body = zeep.helpers.etree.tostring(envelope)
    wrong = requests.post(
        sim.endpoint_url,
        data=body,
        headers={
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": '"http://www.kareo.com/api/schemas/GetThrottles"',
        },
        timeout=5,
    )
    assert wrong.status_code == 500
    assert (
        "a:ActionNotSupported" in wrong.text
        and "ContractFilter mismatch at the EndpointDispatcher" in wrong.text
    )
    right = requests.post(
        sim.endpoint_url,
        data=body,
        headers={
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": '"http://www.kareo.com/api/schemas/KareoServices/GetThrottles"',
        },
        timeout=5,
    )
    assert right.status_code == 200 and "<GetThrottlesResponse" in right.text
