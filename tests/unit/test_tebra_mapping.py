"""Tebra rows to appointment dicts: every date form of docs/tebra.md ("Dates"), daylight-saving days,
placeholder rows."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tasks.tebra.mapping import (
    TebraDateError,
    clinic_day_bounds,
    clinic_day_window,
    iso,
    map_appointment,
    map_appointments,
    map_patient,
    map_provider,
    parse_tebra_datetime,
    tebra_wall_time,
    throttle_endpoint,
    throttle_ms,
)

CHICAGO = ZoneInfo("America/Chicago")
APPOINTMENT_KEYS = {
    "id",
    "patient_id",
    "patient_name",
    "start",
    "end",
    "tebra_status",
    "status",
    "status_known",
    "provider_id",
    "provider_name",
    "location",
    "reason",
    "type",
    "last_modified",
}


def make_row(**overrides: Any) -> dict[str, Any]:
    """An AppointmentData row as Tebra sends it: every value a string."""
    row: dict[str, Any] = {
        "ID": "1001",
        "PatientID": "5501",
        "PatientFullName": "Ada Lovelace",
        "StartDate": "3/9/2026 9:00:00 AM",
        "EndDate": "3/9/2026 9:30:00 AM",
        "AppointmentDuration": "30",
        "ConfirmationStatus": "Check-in",
        "ResourceID1": "77",
        "ResourceName1": "Grace Hopper MD",
        "ResourceTypeID1": "1",
        "ServiceLocationName": "Main Office",
        "AppointmentReason1": "Follow-up",
        "Type": "P",
        "LastModifiedDate": "3/8/2026 4:15:00 PM",
    }
    row.update(overrides)
    return row


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("9/23/2026 1:00:00 PM", "2026-09-23T13:00:00-05:00"),
        ("11/01/2021 4:00:00 AM", "2021-11-01T04:00:00-05:00"),
        ("12/1/2026 12:00:00 AM", "2026-12-01T00:00:00-06:00"),
        ("12/1/2026 12:30:00 PM", "2026-12-01T12:30:00-06:00"),
        ("9/23/2026", "2026-09-23T00:00:00-05:00"),
        ("2026-09-23T13:00:00", "2026-09-23T13:00:00-05:00"),
        ("2026-09-23T13:00:00Z", "2026-09-23T13:00:00-05:00"),  # wall time: the Z is a serializer habit
        ("2026-09-23T13:00:00.1234567Z", "2026-09-23T13:00:00-05:00"),
        ("2026-09-23T13:00:00-04:00", "2026-09-23T12:00:00-05:00"),  # an explicit offset is honoured
    ],
)
def test_parse_every_tebra_date_form(raw: str, expected: str) -> None:
    assert iso(parse_tebra_datetime(raw, CHICAGO)) == expected


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_empty_dates_are_none(raw: str | None) -> None:
    assert parse_tebra_datetime(raw, CHICAGO) is None


def test_unknown_date_form_raises_without_echoing_it() -> None:
    with pytest.raises(TebraDateError) as info:
        parse_tebra_datetime("Tuesday at noon", CHICAGO)
    assert "Tuesday" not in str(info.value)


def test_daylight_saving_gap_and_overlap() -> None:
    # 2:30 AM does not exist on 2026-03-08: it is read as the instant it names, 3:30 CDT.
    gap = parse_tebra_datetime("3/8/2026 2:30:00 AM", CHICAGO)
    assert gap is not None and gap.isoformat() == "2026-03-08T03:30:00-05:00"
    # 1:30 AM happens twice on 2026-11-01: the first (CDT) is taken.
    overlap = parse_tebra_datetime("11/1/2026 1:30:00 AM", CHICAGO)
    assert overlap is not None and overlap.isoformat() == "2026-11-01T01:30:00-05:00"
    after = parse_tebra_datetime("11/1/2026 3:00:00 AM", CHICAGO)
    assert after is not None and after.isoformat() == "2026-11-01T03:00:00-06:00"


@pytest.mark.parametrize(
    ("day", "hours", "window"),
    [
        (date(2026, 3, 8), 23, ("3/8/2026 12:00:00 AM", "3/9/2026 12:00:00 AM")),
        (date(2026, 11, 1), 25, ("11/1/2026 12:00:00 AM", "11/2/2026 12:00:00 AM")),
        (date(2026, 6, 15), 24, ("6/15/2026 12:00:00 AM", "6/16/2026 12:00:00 AM")),
    ],
)
def test_clinic_day_across_daylight_saving(day: date, hours: int, window: tuple[str, str]) -> None:
    start, end = clinic_day_bounds(day, CHICAGO)
    assert (end.timestamp() - start.timestamp()) == hours * 3600
    assert clinic_day_window(day, CHICAGO) == window


def test_wall_time_of_aware_and_naive_datetimes() -> None:
    assert tebra_wall_time(datetime(2026, 3, 8, 15, 4, 5), CHICAGO) == "3/8/2026 3:04:05 PM"
    utc = datetime(2026, 3, 8, 18, 0, tzinfo=ZoneInfo("UTC"))
    assert tebra_wall_time(utc, CHICAGO) == "3/8/2026 1:00:00 PM"  # CDT, -5


def test_map_appointment_shape_and_values() -> None:
    appointment = map_appointment(make_row(), CHICAGO)
    assert appointment is not None
    assert set(appointment) == APPOINTMENT_KEYS
    assert appointment == {
        "id": "1001",
        "patient_id": "5501",
        "patient_name": "Ada Lovelace",
        "start": "2026-03-09T09:00:00-05:00",
        "end": "2026-03-09T09:30:00-05:00",
        "tebra_status": "Check-in",
        "status": "arrived",
        "status_known": True,
        "provider_id": "77",
        "provider_name": "Grace Hopper MD",
        "location": "Main Office",
        "reason": "Follow-up",
        "type": "P",
        "last_modified": "2026-03-08T16:15:00-05:00",
    }


def test_appointment_spanning_the_fall_back_hour() -> None:
    row = make_row(StartDate="11/1/2026 12:30:00 AM", EndDate="", AppointmentDuration="120")
    appointment = map_appointment(row, CHICAGO)
    assert appointment is not None
    assert appointment["start"] == "2026-11-01T00:30:00-05:00"
    assert appointment["end"] == "2026-11-01T01:30:00-06:00"  # two real hours later, the second 1:30


def test_provider_is_the_first_doctor_resource() -> None:
    row = make_row(
        ResourceID1="9",
        ResourceName1="Exam Room 2",
        ResourceTypeID1="2",
        ResourceID2="78",
        ResourceName2="Alan Turing DO",
        ResourceTypeID2="1",
    )
    appointment = map_appointment(row, CHICAGO)
    assert appointment is not None
    assert (appointment["provider_id"], appointment["provider_name"]) == ("78", "Alan Turing DO")


def test_placeholder_rows_and_duplicates_are_dropped() -> None:
    rows = [make_row(ID=""), make_row(ID=None), make_row(), make_row(ID=" 1001 "), make_row(ID="1002")]
    assert [a["id"] for a in map_appointments(rows, CHICAGO)] == ["1001", "1002"]


def test_nil_columns_become_none_and_unknown_status_is_flagged() -> None:
    row = {"ID": "7", "ConfirmationStatus": "Waitlisted"}
    appointment = map_appointment(row, CHICAGO)
    assert appointment is not None
    assert appointment["start"] is None and appointment["patient_id"] is None
    assert (appointment["status"], appointment["status_known"]) == ("scheduled", False)


def test_map_provider_and_patient() -> None:
    provider = map_provider({"ID": "77", "FullName": "Grace Hopper MD", "Active": "True", "Degree": "MD"})
    assert provider is not None and provider["active"] is True and provider["full_name"] == "Grace Hopper MD"
    assert map_provider({"ID": ""}) is None
    row = {"ID": "5501", "FirstName": "Ada", "LastName": "Lovelace", "DOB": "12/10/1815 12:00:00 AM"}
    patient = map_patient(row, CHICAGO)
    assert patient is not None and patient["dob"] == "1815-12-10"
    assert map_patient(None, CHICAGO) is None


def test_throttle_helpers() -> None:
    assert throttle_endpoint("GetPatient") == "GetPatient"
    assert throttle_endpoint("KareoServices.GetAppointments") == "GetAppointments"
    assert throttle_ms("250.4") == 251
