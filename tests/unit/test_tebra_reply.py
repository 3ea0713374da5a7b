"""The fast reply reader: the shapes the gateway consumes, WCF's leniency, and what it hands back to zeep."""

from __future__ import annotations

import pytest

from tasks.tebra import reply

ENVELOPE = """<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
<GetAppointmentsResponse xmlns="http://www.kareo.com/api/schemas/"
  xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><GetAppointmentsResult>{result}</GetAppointmentsResult>
</GetAppointmentsResponse></s:Body></s:Envelope>"""

OK_ERROR = (
    "<ErrorResponse><ErrorMessage i:nil='true'/><IsError>false</IsError>"
    "<StackTrace i:nil='true'/></ErrorResponse>"
)
OK_SECURITY = (
    "<SecurityResponse><Authenticated>true</Authenticated><Authorized>true</Authorized>"
    "<CustomerId>7</CustomerId><CustomerKeyValid>true</CustomerKeyValid>"
    "<PermissionsMissing i:nil='true'/><PracticesAuthorized i:nil='true'/>"
    "<SecurityResult>Success</SecurityResult><SecurityResultSuccess>true</SecurityResultSuccess></SecurityResponse>"
)


def body(result: str) -> bytes:
    return ENVELOPE.format(result=result).encode()


def read(result: str) -> object:
    return reply.read(body(result), "GetAppointments", array="Appointments", item="AppointmentData")


def test_rows_are_plain_dicts_with_nil_as_none() -> None:
    rows = (
        "<Appointments><AppointmentData><ID>9001</ID><Notes i:nil='true'/>"
        "<PatientFullName>Testa Marker</PatientFullName>"
        "</AppointmentData><AppointmentData><ID>9002</ID><Notes></Notes></AppointmentData></Appointments>"
    )
    parsed = read(OK_ERROR + OK_SECURITY + rows)
    assert parsed.Appointments == {  # type: ignore[attr-defined]
        "AppointmentData": [
            {"ID": "9001", "Notes": None, "PatientFullName": "Testa Marker"},
            {"ID": "9002", "Notes": None},
        ]
    }
    assert parsed.ErrorResponse.IsError is False  # type: ignore[attr-defined]
    assert parsed.SecurityResponse.SecurityResultSuccess is True  # type: ignore[attr-defined]
    assert parsed.SecurityResponse.PermissionsMissing is None  # type: ignore[attr-defined]


def test_an_out_of_order_error_response_still_reads_as_the_error() -> None:
    error = (
        "<ErrorResponse><IsError>true</IsError><ErrorMessage>429: GetAppointments endpoint requested "
        "more than allowed over time interval 1000 milliseconds.</ErrorMessage></ErrorResponse>"
    )
    parsed = read(error + "<SecurityResponse i:nil='true'/><Appointments i:nil='true'/>")
    assert parsed.ErrorResponse.IsError is True  # type: ignore[attr-defined]
    assert "requested more than allowed" in parsed.ErrorResponse.ErrorMessage  # type: ignore[attr-defined]
    assert parsed.SecurityResponse is None and parsed.Appointments is None  # type: ignore[attr-defined]


def test_security_failures_and_missing_permissions() -> None:
    security = (
        "<SecurityResponse><Authenticated>true</Authenticated><Authorized>false</Authorized>"
        "<CustomerKeyValid>true</CustomerKeyValid><PermissionsMissing><Permission xmlns:a="
        "'http://schemas.microsoft.com/2003/10/Serialization/Arrays'><a:string>ReadAppointments</a:string>"
        "</Permission></PermissionsMissing><SecurityResult>Denied</SecurityResult>"
        "<SecurityResultSuccess>false</SecurityResultSuccess></SecurityResponse>"
    )
    parsed = read(OK_ERROR + security)
    assert parsed.SecurityResponse.Authorized is False  # type: ignore[attr-defined]
    assert parsed.SecurityResponse.PermissionsMissing == {  # type: ignore[attr-defined]
        "Permission": {"string": ["ReadAppointments"]}
    }


@pytest.mark.parametrize(
    "raw",
    [
        b"<html>maintenance</html>",
        b"not xml at all",
        b"<s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'><s:Body><s:Fault>"
        b"<faultcode>a:InternalServiceFault</faultcode></s:Fault></s:Body></s:Envelope>",
        body(OK_ERROR).replace(b"GetAppointmentsResponse", b"GetProvidersResponse"),
        b"<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><x>&e;</x>",
    ],
)
def test_anything_else_goes_back_to_zeep(raw: bytes) -> None:
    with pytest.raises(reply.UnreadableReply):
        reply.read(raw, "GetAppointments", array="Appointments", item="AppointmentData")
