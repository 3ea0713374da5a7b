"""The served operations: each turns a parsed request into the payload members of its ``<Op>Resp``.

A handler returns only the payload (``{"Appointments": [...]}``); the server adds ErrorResponse and
SecurityResponse. Business errors raise :class:`BusinessError` (HTTP 200, IsError=true) and server-side
failures raise :class:`ServerFault` (HTTP 500 InternalServiceFault), as Tebra does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tebra_sim import dates, envelope
from tebra_sim.clinic import REASONS, Appointment, Patient, Provider
from tebra_sim.simulation import Simulation

Payload = dict[str, Any]
END_OF_DAY = time(23, 59, 59, 999999)
NULL_REFERENCE = "Object reference not set to an instance of an object."
UNREADABLE_DATE = "31/31/2026 25:61:00 XM"  # the unreadable_dates fault: a date in no form a client knows


class BusinessError(Exception):
    """IsError=true with this message and stack trace, HTTP 200."""

    def __init__(self, message: str, stack_trace: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.stack_trace = stack_trace


class ServerFault(Exception):
    """An InternalServiceFault (HTTP 500); the reason is logged, never sent."""


def _validation_error(operation: str, message: str) -> BusinessError:
    # The trace Kareo returns when the Filter is missing (docs/tebra.md, "List reads and their rows"):
    # callers match on ValidateDateTimeFields.
    return BusinessError(
        message,
        (
            "   at KareoServicesWCF.Validation.ValidationHelper.ValidateDateTimeFields(Object filter)\r\n"
            f"   at KareoServicesWCF.KareoServices.{operation}({operation}Req request)"
        ),
    )


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _same(wanted: Any, actual: object) -> bool:
    """Tebra's filters are exact-name matches, case-insensitive; an empty filter member matches everything."""
    return _blank(wanted) or str(wanted).strip().lower() == str(actual).strip().lower()


def _columns(fields: Any) -> set[str] | None:
    """The requested columns; None means all (Fields nil, ``<Fields/>``, or no toggle set)."""
    if not isinstance(fields, dict):
        return None
    wanted = {name for name, value in fields.items() if str(value).strip().lower() in ("true", "1")}
    return wanted or None


def _only(row: dict[str, Any], columns: set[str] | None) -> dict[str, Any]:
    return row if columns is None else {name: value for name, value in row.items() if name in columns}


def _date(raw: Any, sim: Simulation, operation: str, *, end: bool = False) -> datetime | None:
    """A filter date; a date without a time of day ends a window at that day's last instant (inclusive)."""
    if _blank(raw):
        return None
    try:
        value, has_time = dates.parse_filter_date(str(raw), sim.tz)
    except dates.InvalidDate as exc:
        raise _validation_error(operation, str(exc)) from exc
    return datetime.combine(value.date(), END_OF_DAY) if end and not has_time else value


def _in_window(moment: datetime, low: datetime | None, high: datetime | None) -> bool:
    return (low is None or moment >= low) and (high is None or moment <= high)


def _bool(value: bool) -> str:
    return "True" if value else "False"


# --- GetAppointments ---


def appointment_window(
    sim: Simulation, filt: Payload, operation: str = "GetAppointments"
) -> tuple[datetime, datetime]:
    """StartDate/EndDate with the guide's defaults (docs/tebra.md, "Dates").

    Neither → from 3 days before today; no StartDate → 7 days before today; no EndDate → StartDate + 7 days.
    """
    today = dates.day_start(sim.today())
    start = _date(filt.get("StartDate"), sim, operation)
    end = _date(filt.get("EndDate"), sim, operation, end=True)
    if start is None:
        start = today - timedelta(days=3 if end is None else 7)
    if end is None:
        end = start + timedelta(days=7)
    return start, end


_REASON_IDS = {reason: str(number) for number, reason in enumerate(REASONS, start=1)}


def stamper(sim: Simulation) -> Callable[[datetime], datetime]:
    """How a practice-local wall time is stamped: as it is, or (switch ``stamp_tz``) as the same instant's
    wall time in another zone, the way a Tebra server in that zone would write LastModifiedDate."""
    zone = sim.faults.switches.stamp_tz
    if zone is None:
        return lambda wall: wall
    other = ZoneInfo(zone)
    return lambda wall: wall.replace(tzinfo=sim.tz).astimezone(other).replace(tzinfo=None)


def appointment_row(
    sim: Simulation, appointment: Appointment, stamp: Callable[[datetime], datetime] | None = None
) -> dict[str, Any]:
    """Every AppointmentData column this simulator knows, all as strings (the wire type of every column);
    ``stamp`` is :func:`stamper`'s answer, taken once per reply (the switches are read under a lock)."""
    stamp = stamp or stamper(sim)
    clinic = sim.clinic
    provider = clinic.provider(appointment.provider_id)
    location = clinic.location(appointment.location_id)
    return {
        "AllDay": "False",
        "AppointmentDuration": str(appointment.duration_minutes),
        "AppointmentReason1": appointment.reason,
        "AppointmentReasonID1": _REASON_IDS.get(appointment.reason, "0"),
        "ConfirmationStatus": appointment.status,
        "CreatedDate": dates.render(stamp(appointment.created)),
        "EndDate": dates.render(appointment.end),
        "ID": str(appointment.id),
        "LastModifiedDate": dates.render(stamp(appointment.last_modified)),
        "Notes": appointment.notes or None,
        "PatientCaseID": str(appointment.patient_id * 10 + 1),
        "PatientCaseName": "Self Pay",
        "PatientCasePayerScenario": "Self Pay",
        "PatientFullName": appointment.patient_full_name,
        "PatientID": str(appointment.patient_id),
        "PracticeID": str(clinic.practice.id),
        "PracticeName": clinic.practice.name,
        "Recurring": "False",
        "ResourceID1": str(appointment.provider_id),
        "ResourceName1": provider.full_name if provider else None,
        "ResourceTypeID1": "1",  # 1 = Doctor
        "ServiceLocationID": str(appointment.location_id),
        "ServiceLocationName": location.name if location else None,
        "StartDate": dates.render(appointment.start),
        "Type": "P",
    }


Window = tuple[datetime | None, datetime | None]


def _windows(sim: Simulation, filt: Payload, operation: str) -> tuple[Window, Window]:
    """The created and last-modified windows (each bound optional; a date-only upper bound is inclusive)."""
    created = (
        _date(filt.get("FromCreatedDate"), sim, operation),
        _date(filt.get("ToCreatedDate"), sim, operation, end=True),
    )
    modified = (
        _date(filt.get("FromLastModifiedDate"), sim, operation),
        _date(filt.get("ToLastModifiedDate"), sim, operation, end=True),
    )
    return created, modified


# AppointmentFilter member → the AppointmentData column it matches (exact, case-insensitive).
_ROW_FILTERS = (
    ("PracticeName", "PracticeName"),
    ("ResourceName", "ResourceName1"),
    ("ConfirmationStatus", "ConfirmationStatus"),
    ("PatientID", "PatientID"),
    ("PatientFullName", "PatientFullName"),
    ("ServiceLocationName", "ServiceLocationName"),
    ("AppointmentReason", "AppointmentReason1"),
    ("PatientCasePayerScenario", "PatientCasePayerScenario"),
    ("Type", "Type"),
)


def _row_checks(filt: Payload) -> list[tuple[str, str]]:
    """(column, wanted text) for each name filter that is set: an empty one matches every row, so it is
    dropped here once instead of being compared for each of the day's rows."""
    return [
        (column, str(filt.get(member)).strip().lower())
        for member, column in _ROW_FILTERS
        if not _blank(filt.get(member))
    ]


def _matches(row: dict[str, Any], checks: list[tuple[str, str]]) -> bool:
    return all(str(row[column]).strip().lower() == wanted for column, wanted in checks)


def get_appointments(sim: Simulation, request: Payload) -> Payload:
    filt = request.get("Filter")
    if not isinstance(filt, dict):
        raise _validation_error("GetAppointments", NULL_REFERENCE)
    start, end = appointment_window(sim, filt)
    switches = sim.faults.switches
    limit = switches.max_range_days
    if end - start > timedelta(days=limit):
        raise ServerFault(f"date range above {limit} days")
    created, modified = _windows(sim, filt, "GetAppointments")
    checks = _row_checks(filt)
    stamp = stamper(sim)
    unreadable = set(switches.unreadable_dates or ())
    rows = []
    for appointment in sim.store.between(start, end):
        # The created and modified filters compare wall times as Tebra stamped them (switch stamp_tz).
        if not (
            _in_window(stamp(appointment.created), *created)
            and _in_window(stamp(appointment.last_modified), *modified)
        ):
            continue
        row = appointment_row(sim, appointment, stamp)
        if appointment.id in unreadable:
            row["LastModifiedDate"] = UNREADABLE_DATE
        if _matches(row, checks):
            rows.append(row)
    columns = _columns(request.get("Fields"))
    placeholder = switches.placeholder_row
    # Contested live observations (docs/tebra.md, "List reads and their rows"), off unless switched on: a
    # placeholder row with an empty ID.
    if (placeholder == "toggles" and columns is not None) or placeholder == "always":
        return {"Appointments": [{"ID": ""}]}
    if placeholder == "empty_result" and not rows:
        return {"Appointments": [{"ID": ""}]}
    return {"Appointments": envelope.FlatItems(rows, columns)}


# --- GetProviders, GetPractices ---


def provider_row(sim: Simulation, provider: Provider) -> dict[str, Any]:
    practice = sim.clinic.practice
    return {
        "Active": "True",
        "CreatedDate": dates.render(provider.created),
        "Degree": provider.degree,
        "EmailAddress": f"{provider.first_name.lower()}.{provider.last_name.lower()}@example.test",
        "FirstName": provider.first_name,
        "FullName": provider.full_name,
        "ID": str(provider.id),
        "LastModifiedDate": dates.render(provider.created + timedelta(days=90)),
        "LastName": provider.last_name,
        "NationalProviderIdentifier": provider.npi,
        "PracticeID": str(practice.id),
        "PracticeName": practice.name,
        "SpecialtyName": provider.specialty,
        "Type": "Normal Provider",
        "WorkPhone": "(312) 555-0100",
    }


def _list_operation(
    sim: Simulation,
    request: Payload,
    operation: str,
    rows: Iterable[dict[str, Any]],
    keep: Callable[[dict[str, Any], Payload], bool],
) -> list[dict[str, Any]]:
    """Shared by the Fields+Filter list operations: window on created/modified dates, then ``keep``."""
    filt = request.get("Filter")
    filt = (
        filt if isinstance(filt, dict) else {}
    )  # Tebra only documents the null-Filter error for appointments
    created, modified = _windows(sim, filt, operation)
    columns = _columns(request.get("Fields"))
    kept = []
    for row in rows:
        row_created, _ = dates.parse_filter_date(row["CreatedDate"], sim.tz)
        row_modified, _ = dates.parse_filter_date(row["LastModifiedDate"], sim.tz)
        if _in_window(row_created, *created) and _in_window(row_modified, *modified) and keep(row, filt):
            kept.append(_only(row, columns))
    return kept


def get_providers(sim: Simulation, request: Payload) -> Payload:
    rows = (provider_row(sim, provider) for provider in sim.clinic.providers)
    return {
        "Providers": _list_operation(
            sim,
            request,
            "GetProviders",
            rows,
            lambda row, f: (
                _same(f.get("FullName"), row["FullName"])
                and _same(f.get("PracticeName"), row["PracticeName"])
                and _same(f.get("PracticeID"), row["PracticeID"])
                and _same(f.get("Type"), row["Type"])
                and _blank(f.get("DepartmentName"))
            ),
        )
    }


def practice_row(sim: Simulation) -> dict[str, Any]:
    practice = sim.clinic.practice
    return {
        "Active": "True",
        "CreatedDate": dates.render(practice.created),
        "Email": "front-desk@example.test",
        "ID": str(practice.id),
        "LastModifiedDate": dates.render(practice.created + timedelta(days=400)),
        "NPI": "9000000001",
        "Phone": "(312) 555-0100",
        "PracticeAddressLine1": "100 Example Avenue",
        "PracticeCity": "Chicago",
        "PracticeCountry": "USA",
        "PracticeName": practice.name,
        "PracticeState": "IL",
        "PracticeZipCode": "60601",
        "SubscriptionEdition": "Max",
        "TaxID": "00-0000001",
    }


def get_practices(sim: Simulation, request: Payload) -> Payload:
    return {
        "Practices": _list_operation(
            sim,
            request,
            "GetPractices",
            [practice_row(sim)],
            lambda row, f: (
                _same(f.get("PracticeName"), row["PracticeName"])
                and _same(f.get("ID"), row["ID"])
                and _same(f.get("Active"), row["Active"])
                and _same(f.get("NPI"), row["NPI"])
                and _same(f.get("TaxID"), row["TaxID"])
            ),
        )
    }


# --- GetPatient, GetThrottles ---


def _age(dob: date, today: date) -> int:
    return today.year - dob.year - ((today.month, today.day) < (dob.month, dob.day))


def patient_data(sim: Simulation, patient: Patient) -> dict[str, Any]:
    practice = sim.clinic.practice
    provider = sim.clinic.providers[patient.id % len(sim.clinic.providers)]
    location = sim.clinic.locations[patient.id % len(sim.clinic.locations)]
    case_id = str(patient.id * 10 + 1)
    return {
        "AddressLine1": patient.address_line1,
        "Age": str(_age(patient.dob, sim.today())),
        "Cases": [
            {
                "IsPrimaryCase": True,
                "Name": "Self Pay",
                "PatientCaseID": case_id,
                "PayerScenario": "Self Pay",
                "SendPatientStatements": "True",
            }
        ],
        "City": patient.city,
        "Country": "USA",
        "CreatedDate": dates.render(patient.created),
        "DOB": dates.render(dates.day_start(patient.dob)),
        "DefaultCaseID": case_id,
        "DefaultCaseName": "Self Pay",
        "DefaultCasePayerScenario": "Self Pay",
        "DefaultRenderingProviderFullName": provider.full_name,
        "DefaultRenderingProviderId": str(provider.id),
        "DefaultServiceLocationId": str(location.id),
        "DefaultServiceLocationName": location.name,
        "EmailAddress": patient.email,
        "FirstName": patient.first_name,
        "Gender": patient.gender,
        "HomePhone": patient.home_phone,
        "ID": str(patient.id),
        "LastModifiedDate": dates.render(patient.created + timedelta(days=30)),
        "LastName": patient.last_name,
        "MedicalRecordNumber": f"MRN{patient.id}",
        "MiddleName": patient.middle_name,
        "MobilePhone": patient.mobile_phone,
        "PatientFullName": patient.full_name,
        "PracticeId": str(practice.id),
        "PracticeName": practice.name,
        "State": patient.state,
        "ZipCode": patient.zip_code,
    }


def get_patient(sim: Simulation, request: Payload) -> Payload:
    filt = request.get("Filter")
    if not isinstance(filt, dict):
        raise _validation_error("GetPatient", NULL_REFERENCE)
    raw_id = filt.get("PatientID")
    patient = sim.clinic.patient(int(raw_id)) if raw_id and str(raw_id).strip().isdigit() else None
    if patient is None:
        # Tebra's exact text is not public; a client should only rely on IsError.
        raise BusinessError(f"Patient not found (PatientID {raw_id}).")
    return {"Patient": patient_data(sim, patient)}


def get_throttles(sim: Simulation, request: Payload) -> Payload:
    return {
        "ThrottleDetails": [
            {"Endpoint": name, "ThrottleTimeMs": ms} for name, ms in sim.throttle.intervals_ms.items()
        ]
    }


HANDLERS: dict[str, Callable[[Simulation, Payload], Payload]] = {
    "GetAppointments": get_appointments,
    "GetProviders": get_providers,
    "GetPractices": get_practices,
    "GetPatient": get_patient,
    "GetThrottles": get_throttles,
}
