"""The gateway on the wire, against the real Tebra WSDL (offline): requests as zeep serialises them, replies
as WCF writes them, parsed by zeep's own binding, and the exceptions zeep really raises, classified."""

from __future__ import annotations

import dataclasses
import pickle
import re
import uuid
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from lxml import etree
from zeep import exceptions as zeep_exc
from zeep.wsdl.utils import etree_to_string

from config.settings import Settings, load_settings
from tasks.tebra import client as tebra_client
from tasks.tebra import template
from tasks.tebra.errors import (
    TebraBusinessError,
    TebraError,
    TebraSecurityError,
    TebraThrottled,
    TebraUpstreamError,
    classify,
)
from tasks.tebra.gateway import APPOINTMENT_FIELDS, TebraGateway
from tasks.tebra.mapping import clinic_day_bounds
from tasks.tebra.response import check_response
from tests.support.real_tebra import real_fault_path, real_wsdl_path, require_real_file

REAL_WSDL = real_wsdl_path()
FAULT_FILE = real_fault_path()
NS = "http://www.kareo.com/api/schemas/"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
CHICAGO = ZoneInfo("America/Chicago")
THROTTLE_MESSAGE = (
    "429: GetAppointments endpoint requested more than allowed over time interval 1000 milliseconds. "
    "Please wait to try again."
)


@pytest.fixture(scope="module", autouse=True)
def _real_wsdl() -> None:
    """Every test here reads the real WSDL: skipped locally without it, failed under CI=true."""
    require_real_file(REAL_WSDL)


def q(name: str) -> str:
    return f"{{{NS}}}{name}"


@pytest.fixture(scope="module")
def settings() -> Settings:
    """Settings pointing at the real WSDL on disk and an address nothing listens on."""
    return load_settings(
        environ={"APP_ENV": "test"},
        tebra_wsdl_url=str(REAL_WSDL),
        tebra_endpoint_url="http://127.0.0.1:9/KareoServices.svc",
        tebra_password="s3cret-Passw0rd",
        tebra_customer_key="ck-0123456789",
        tebra_practice_name="Lakeside Family Clinic",
    )


@pytest.fixture(scope="module")
def tc(settings: Settings) -> tebra_client.TebraClient:
    """A zeep client built from the real WSDL the way production builds it."""
    return tebra_client.build_client(settings)


@pytest.fixture
def gateway(settings: Settings, tc: tebra_client.TebraClient) -> TebraGateway:
    """A gateway without a throttle (nothing here touches the network)."""
    return TebraGateway(settings, client=tc)


def request_body(tc: tebra_client.TebraClient, operation: str, request: Any) -> etree._Element:
    """The ``request`` element zeep would send for ``operation``."""
    envelope = tc.zeep.create_message(tc.service, operation, request=request)
    body = envelope.find(f"{{{SOAP_ENV}}}Body")
    wrapper = body[0]
    assert wrapper.tag == q(operation)
    (req,) = list(wrapper)
    assert req.tag == q("request")
    return req


def child_names(element: etree._Element) -> list[str]:
    return [etree.QName(child).localname for child in element]


def schema_order(tc: tebra_client.TebraClient, type_name: str) -> list[str]:
    xsd_type = tc.zeep.get_type(f"{{{NS}}}{type_name}")
    return [name for name, _ in xsd_type.elements]


# --- requests -------------------------------------------------------------------------------------


def test_client_binds_the_port_with_the_configured_address(tc: tebra_client.TebraClient) -> None:
    assert tc.address == "http://127.0.0.1:9/KareoServices.svc"
    operation = tc.service._binding._operations["GetAppointments"]
    assert operation.soapaction == "http://www.kareo.com/api/schemas/KareoServices/GetAppointments"


def test_client_falls_back_to_the_wsdl_soap_address(settings: Settings) -> None:
    built = tebra_client.build_client(
        load_settings(environ={"APP_ENV": "test"}, tebra_wsdl_url=str(REAL_WSDL))
    )
    assert built.address == "https://webservice.kareo.com/services/soap/2.1/KareoServices.svc"
    assert built.zeep.transport.operation_timeout == settings.tebra_operation_timeout_s
    assert built.zeep.transport.load_timeout == settings.tebra_connect_timeout_s


def test_one_client_per_process_until_reset(settings: Settings) -> None:
    tebra_client.reset()
    try:
        first = tebra_client.get_client(settings)
        assert tebra_client.get_client(settings) is first
        tebra_client.reset()
        second = tebra_client.get_client(settings)
        assert second is not first
        other = load_settings(
            environ={"APP_ENV": "test"}, tebra_wsdl_url=str(REAL_WSDL), tebra_endpoint_url="http://h/x"
        )
        assert tebra_client.get_client(other) is not second
    finally:
        tebra_client.reset()


def test_get_appointments_request_matches_the_schema(
    tc: tebra_client.TebraClient, gateway: TebraGateway, settings: Settings
) -> None:
    start, end = clinic_day_bounds(date(2026, 3, 8), CHICAGO)
    req = request_body(tc, "GetAppointments", gateway.appointments_request(start, end))

    # RequestHeader first, inside the body, credentials in schema order; then Fields, then Filter.
    assert child_names(req) == ["RequestHeader", "Fields", "Filter"]
    header = req.find(q("RequestHeader"))
    assert child_names(header) == ["ClientVersion", "CustomerKey", "Password", "User"]
    assert header.findtext(q("CustomerKey")) == settings.tebra_customer_key
    assert header.findtext(q("Password")) == settings.tebra_password
    assert header.findtext(q("User")) == settings.tebra_user

    fields = req.find(q("Fields"))
    sent = child_names(fields)
    assert sorted(sent) == sorted(APPOINTMENT_FIELDS)
    order = schema_order(tc, "AppointmentFieldsToReturn")
    assert sent == [name for name in order if name in sent]
    assert all(child.text == "true" for child in fields)

    filter_ = req.find(q("Filter"))
    assert child_names(filter_) == ["EndDate", "PracticeName", "StartDate"]  # schema (alphabetical) order
    assert filter_.findtext(q("PracticeName")) == "Lakeside Family Clinic"
    assert filter_.findtext(q("StartDate")) == "3/8/2026 12:00:00 AM"
    assert filter_.findtext(q("EndDate")) == "3/9/2026 12:00:00 AM"


def test_modified_since_sends_the_last_modified_pair(
    tc: tebra_client.TebraClient, gateway: TebraGateway
) -> None:
    start, end = clinic_day_bounds(date(2026, 11, 1), CHICAGO)
    since = datetime(2026, 11, 1, 13, 5, 9, tzinfo=ZoneInfo("UTC"))
    req = request_body(tc, "GetAppointments", gateway.appointments_request(start, end, modified_since=since))
    filter_ = req.find(q("Filter"))
    assert child_names(filter_) == [
        "EndDate",
        "FromLastModifiedDate",
        "PracticeName",
        "StartDate",
        "ToLastModifiedDate",
    ]
    assert filter_.findtext(q("FromLastModifiedDate")) == "11/1/2026 7:05:09 AM"  # 13:05 UTC is 7:05 CST


def test_get_patient_and_get_throttles_requests(tc: tebra_client.TebraClient, gateway: TebraGateway) -> None:
    t = tc.types
    req = request_body(
        tc,
        "GetPatient",
        t.GetPatientReq(RequestHeader=gateway._header(), Filter=t.SinglePatientFilter(PatientID=42)),
    )
    assert child_names(req) == ["RequestHeader", "Filter"]
    assert req.find(q("Filter")).findtext(q("PatientID")) == "42"
    req = request_body(tc, "GetThrottles", t.GetThrottlesReq(RequestHeader=gateway._header()))
    assert child_names(req) == ["RequestHeader"]


# --- replies, as WCF writes them -------------------------------------------------------------------

OK_ERROR = (
    '<ErrorResponse><ErrorMessage i:nil="true"/><IsError>false</IsError>'
    '<StackTrace i:nil="true"/></ErrorResponse>'
)


def security(
    authenticated: str = "true",
    authorized: str = "true",
    key_valid: str = "true",
    success: str = "true",
    result: str = "Success",
    permissions: str = '<PermissionsMissing i:nil="true"/>',
) -> str:
    return (
        f"<SecurityResponse><Authenticated>{authenticated}</Authenticated><Authorized>{authorized}</Authorized>"
        f"<CustomerId>7</CustomerId><CustomerKeyValid>{key_valid}</CustomerKeyValid>{permissions}"
        f'<PracticesAuthorized i:nil="true"/><SecurityResult>{result}</SecurityResult>'
        f"<SecurityResultSuccess>{success}</SecurityResultSuccess></SecurityResponse>"
    )


def envelope(operation: str, result_xml: str) -> bytes:
    return (
        f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Body><{operation}Response xmlns="{NS}">'
        f'<{operation}Result xmlns:i="http://www.w3.org/2001/XMLSchema-instance">{result_xml}'
        f"</{operation}Result></{operation}Response></s:Body></s:Envelope>"
    ).encode()


def error_block(message: str, stack: str = "") -> str:
    return (
        f"<ErrorResponse><ErrorMessage>{message}</ErrorMessage><IsError>true</IsError>"
        f"<StackTrace>{stack}</StackTrace></ErrorResponse>"
    )


def http_response(
    body: bytes, status: int = 200, content_type: str = "text/xml; charset=utf-8"
) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body
    response.headers["Content-Type"] = content_type
    return response


def process(tc: tebra_client.TebraClient, operation: str, body: bytes, status: int = 200) -> Any:
    """What zeep returns (or raises) for this HTTP reply to ``operation``."""
    binding = tc.service._binding
    return binding.process_reply(tc.zeep, binding._operations[operation], http_response(body, status))


def test_a_wcf_success_reply_passes_the_checks(tc: tebra_client.TebraClient, settings: Settings) -> None:
    rows = (
        "<Appointments><AppointmentData><ID>1001</ID><PatientID>55</PatientID>"
        "<StartDate>3/8/2026 9:00:00 AM</StartDate></AppointmentData>"
        "<AppointmentData><ID></ID></AppointmentData></Appointments>"
    )
    response = process(tc, "GetAppointments", envelope("GetAppointments", OK_ERROR + security() + rows))
    check_response("GetAppointments", response, settings)
    assert [row.ID for row in response.Appointments.AppointmentData] == ["1001", None]


def test_throttle_as_error_response(tc: tebra_client.TebraClient) -> None:
    response = process(tc, "GetAppointments", envelope("GetAppointments", error_block(THROTTLE_MESSAGE)))
    with pytest.raises(TebraThrottled) as info:
        check_response("GetAppointments", response)
    assert info.value.interval_ms == 1000
    assert info.value.retry_after_s == 1.0
    assert info.value.outcome == "throttled"


def test_throttle_as_http_429_fault(tc: tebra_client.TebraClient) -> None:
    body = envelope("GetAppointments", error_block(THROTTLE_MESSAGE))
    with pytest.raises(zeep_exc.Fault) as info:
        process(tc, "GetAppointments", body, status=429)
    error = classify(info.value, "GetAppointments", status_code=429)
    assert isinstance(error, TebraThrottled)
    assert error.interval_ms == 1000


def test_throttle_as_http_429_plain_text(tc: tebra_client.TebraClient) -> None:
    with pytest.raises(zeep_exc.TransportError) as info:
        process(tc, "GetAppointments", THROTTLE_MESSAGE.encode(), status=429)
    error = classify(info.value, "GetAppointments")
    assert isinstance(error, TebraThrottled)
    assert error.interval_ms == 1000


def test_throttle_as_an_out_of_order_body(tc: tebra_client.TebraClient) -> None:
    # IsError before ErrorMessage: zeep's strict parser raises what a zeep client saw live (docs/tebra.md,
    # "Rate limits").
    body = envelope(
        "GetAppointments",
        f"<ErrorResponse><IsError>true</IsError><ErrorMessage>{THROTTLE_MESSAGE}</ErrorMessage></ErrorResponse>",
    )
    with pytest.raises(zeep_exc.XMLParseError) as info:
        process(tc, "GetAppointments", body)
    assert "Unexpected element" in str(info.value)
    error = classify(info.value, "GetAppointments", raw_body=body, status_code=200)
    assert isinstance(error, TebraThrottled)
    assert error.interval_ms == 1000
    # Without the raw body the text is out of reach: it is an unreadable reply, an upstream failure.
    assert isinstance(classify(info.value, "GetAppointments"), TebraUpstreamError)


def test_bad_password_is_a_security_error_without_the_password(
    tc: tebra_client.TebraClient, settings: Settings
) -> None:
    sec = security("false", "false", "true", "false", "Invalid user name and/or password")
    response = process(tc, "GetAppointments", envelope("GetAppointments", OK_ERROR + sec))
    with pytest.raises(TebraSecurityError) as info:
        check_response("GetAppointments", response, settings)
    message = str(info.value)
    assert "Authenticated=false" in message
    assert "Invalid user name and/or password" in message
    assert settings.tebra_password not in message
    assert info.value.retryable is False


def test_security_text_that_echoes_a_secret_is_redacted(
    tc: tebra_client.TebraClient, settings: Settings
) -> None:
    sec = security("false", "false", "true", "false", f"bad password {settings.tebra_password}")
    response = process(tc, "GetAppointments", envelope("GetAppointments", OK_ERROR + sec))
    with pytest.raises(TebraSecurityError) as info:
        check_response("GetAppointments", response, settings)
    assert settings.tebra_password not in str(info.value)


def test_bad_customer_key_and_missing_permissions(tc: tebra_client.TebraClient, settings: Settings) -> None:
    response = process(tc, "GetProviders", envelope("GetProviders", OK_ERROR + security(key_valid="false")))
    with pytest.raises(TebraSecurityError, match="CustomerKeyValid=false"):
        check_response("GetProviders", response, settings)
    permissions = (
        '<PermissionsMissing><Permission xmlns:a="http://schemas.microsoft.com/2003/10/Serialization/Arrays">'
        "<a:string>ViewAppointments</a:string></Permission></PermissionsMissing>"
    )
    sec = security(authorized="false", success="false", permissions=permissions)
    response = process(tc, "GetAppointments", envelope("GetAppointments", OK_ERROR + sec))
    with pytest.raises(TebraSecurityError, match="ViewAppointments"):
        check_response("GetAppointments", response, settings)


def test_other_is_error_is_a_business_error_with_phi_withheld(tc: tebra_client.TebraClient) -> None:
    nre = "Object reference not set to an instance of an object."
    body = envelope("GetAppointments", error_block(nre, "at KareoServicesWCF.Validation.ValidationHelper"))
    with pytest.raises(TebraBusinessError, match="Object reference not set") as info:
        check_response("GetAppointments", process(tc, "GetAppointments", body))
    assert info.value.outcome == "business"
    body = envelope("GetPatient", error_block("Patient Jane Q. Doe (DOB 1/2/1960) was not found"))
    with pytest.raises(TebraBusinessError) as info:
        check_response("GetPatient", process(tc, "GetPatient", body))
    assert "Jane" not in str(info.value)
    assert "1960" not in str(info.value)


def test_internal_service_fault_is_upstream(tc: tebra_client.TebraClient) -> None:
    with pytest.raises(zeep_exc.Fault) as info:
        process(tc, "GetAppointments", FAULT_FILE.read_bytes(), status=500)
    error = classify(info.value, "GetAppointments", status_code=500)
    assert isinstance(error, TebraUpstreamError)
    assert "InternalServiceFault" in str(error)
    assert error.retryable is True


def test_action_not_supported_is_a_business_error(tc: tebra_client.TebraClient) -> None:
    body = (
        f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Body><s:Fault>'
        '<faultcode xmlns:a="http://schemas.microsoft.com/ws/2005/05/addressing/none">a:ActionNotSupported</faultcode>'
        "<faultstring>ContractFilter mismatch at the EndpointDispatcher</faultstring>"
        "</s:Fault></s:Body></s:Envelope>"
    ).encode()
    with pytest.raises(zeep_exc.Fault) as info:
        process(tc, "GetAppointments", body, status=500)
    assert isinstance(classify(info.value, "GetAppointments"), TebraBusinessError)


def test_5xx_without_body_and_html_bodies_are_upstream_and_never_quote_the_body(
    tc: tebra_client.TebraClient,
) -> None:
    with pytest.raises(zeep_exc.TransportError) as info:
        process(tc, "GetAppointments", b"", status=503)
    error = classify(info.value, "GetAppointments")
    assert isinstance(error, TebraUpstreamError)
    assert error.status_code == 503
    html = b"<html><body>Patient Jane Doe<br></body></html>"
    with pytest.raises(zeep_exc.TransportError) as info:
        process(tc, "GetAppointments", html, status=502)
    assert b"Jane" in info.value.content
    error = classify(info.value, "GetAppointments")
    assert isinstance(error, TebraUpstreamError)
    assert "Jane" not in str(error)


@pytest.mark.parametrize(
    "exc",
    [requests.ReadTimeout("read"), requests.ConnectTimeout("connect"), requests.ConnectionError("no")],
)
def test_timeouts_and_connection_errors_are_upstream(exc: Exception) -> None:
    error = classify(exc, "GetProviders")
    assert isinstance(error, TebraUpstreamError)
    assert error.operation == "GetProviders"


@pytest.mark.parametrize(
    "error",
    [
        TebraThrottled("GetAppointments: throttled", "GetAppointments", 1000),
        TebraUpstreamError("GetAppointments: HTTP 503", "GetAppointments", 503),
        TebraSecurityError("GetAppointments: refused", "GetAppointments"),
        TebraBusinessError("GetAppointments: error", "GetAppointments"),
    ],
)
def test_errors_survive_pickling_and_rebuild_from_the_message(error: TebraError) -> None:
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own bytes)
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__
    assert str(type(error)(str(error))) == str(error)  # how Celery rebuilds an exception


# --- the filled-in GetAppointments request (tasks/tebra/template.py) ---------------------------------------
# Byte for byte what zeep serialises for the same request, apart from the WS-Addressing MessageID, which is
# fresh in each; a window that does not fit the template is refused.

MESSAGE_ID = re.compile(rb"<wsa:MessageID>urn:uuid:([0-9a-f-]{36})</wsa:MessageID>")


@pytest.fixture(scope="module")
def escaping_gateway(settings: Settings) -> TebraGateway:
    """A gateway whose credentials and practice name hold everything XML must escape."""
    odd = dataclasses.replace(
        settings, tebra_password="pa<ss>&'\"word", tebra_practice_name="Lakeside & Sons <Family> Clinic"
    )
    return TebraGateway(odd, client=tebra_client.build_client(odd))


def zeep_sends(gateway: TebraGateway, request: object) -> tuple[bytes, dict[str, str]]:
    """What ``service.GetAppointments(request=…)`` posts: the body and the HTTP headers."""
    tc = gateway.client
    envelope, headers = tc.service._binding._create(
        "GetAppointments", (), {"request": request}, client=tc.zeep, options=tc.service._binding_options
    )
    return etree_to_string(envelope), dict(headers)


def without_message_id(ours: bytes, zeeps: bytes) -> tuple[bytes, bytes]:
    """Both bodies with their MessageID blanked, after checking each has one, a fresh uuid4, not the same."""
    ids = [MESSAGE_ID.findall(body) for body in (ours, zeeps)]
    assert [len(found) for found in ids] == [1, 1] and ids[0] != ids[1]
    assert uuid.UUID(ids[0][0].decode()).version == 4
    return MESSAGE_ID.sub(b"", ours), MESSAGE_ID.sub(b"", zeeps)


@pytest.mark.parametrize("day", [date(2026, 3, 8), date(2026, 11, 1), date(2027, 1, 29)])
def test_a_filled_envelope_is_what_zeep_sends(escaping_gateway: TebraGateway, day: date) -> None:
    start, end = clinic_day_bounds(day, CHICAGO)
    prepared = escaping_gateway.appointments_envelope(start, end)
    body, headers = zeep_sends(escaping_gateway, escaping_gateway.appointments_request(start, end))
    ours, zeeps = without_message_id(prepared.body, body)
    assert ours == zeeps and dict(prepared.headers) == headers
    assert b"CLINICRELAYMARK" not in prepared.body
    again = escaping_gateway.appointments_envelope(start, end).body
    assert MESSAGE_ID.findall(again) != MESSAGE_ID.findall(prepared.body)  # a new MessageID every time


def test_the_incremental_shape_is_what_zeep_sends_too(escaping_gateway: TebraGateway) -> None:
    start, end = clinic_day_bounds(date(2026, 11, 2), CHICAGO)
    since = datetime(2026, 11, 1, 13, 5, 9, tzinfo=ZoneInfo("UTC"))
    prepared = escaping_gateway.appointments_envelope(start, end, modified_since=since)
    body, _ = zeep_sends(
        escaping_gateway, escaping_gateway.appointments_request(start, end, modified_since=since)
    )
    assert b"FromLastModifiedDate>11/1/2026 7:05:09 AM<" in prepared.body
    # ToLastModifiedDate is "now + 1 day" when each was built: compare up to it (a second may tick between).
    ours, zeeps = without_message_id(prepared.body, body)
    assert ours.split(b"ToLastModifiedDate")[0] == zeeps.split(b"ToLastModifiedDate")[0]


def test_values_are_escaped_and_a_wrong_window_is_refused(escaping_gateway: TebraGateway) -> None:
    names = ("StartDate", "EndDate")
    marked = escaping_gateway._appointments_req({name: template.mark(name) for name in names})
    built = template.build(escaping_gateway.client, "GetAppointments", marked, names)
    assert (
        b"<ns0:StartDate>&lt;x&gt;&amp;</ns0:StartDate>"
        in built.fill({"StartDate": "<x>&", "EndDate": "-"}).body
    )
    with pytest.raises(ValueError, match="StartDate"):
        built.fill({"StartDate": "3/9/2026 12:00:00 AM"})
    with pytest.raises(ValueError, match="exactly once"):
        template.build(escaping_gateway.client, "GetAppointments", marked, ("Nowhere",))
