"""GetAppointments over real HTTP through zeep and the simulator's own WSDL: windows, filters, columns."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import zeep

from config import load_settings
from tests.support.simulator import Simulator, start_simulator

KAREO = "http://www.kareo.com/api/schemas/"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """One simulator for the module, throttle off, reset before each test."""
    with start_simulator(throttle=False, seed=11, appointments_per_day=12) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(sim: Simulator) -> None:
    sim.reset()


@pytest.fixture(scope="module")
def client(sim: Simulator) -> zeep.Client:
    """zeep on the simulator's own WSDL: its soap:address already points back at the simulator."""
    return zeep.Client(sim.wsdl_url)


def today(sim: Simulator) -> date:
    return datetime.fromisoformat(sim.health()["now"]).date()


def workday(sim: Simulator, offset: int = 0) -> date:
    """The first clinic day (Monday to Friday) at least ``offset`` days from today: weekends hold nothing."""
    day = today(sim) + timedelta(days=offset)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def us(day: date) -> str:
    return f"{day.month}/{day.day}/{day.year}"


def get_appointments(client: zeep.Client, fields: dict[str, bool] | None = None, **filters: str) -> Any:
    settings = load_settings({"APP_ENV": "test"})
    types = client.type_factory(KAREO)
    header = types.RequestHeader(
        CustomerKey=settings.tebra_customer_key, Password=settings.tebra_password, User=settings.tebra_user
    )
    request = types.GetAppointmentsReq(
        RequestHeader=header,
        Fields=types.AppointmentFieldsToReturn(**(fields or {})),
        Filter=types.AppointmentFilter(PracticeName=settings.tebra_practice_name, **filters),
    )
    result = client.service.GetAppointments(request=request)
    assert result.ErrorResponse.IsError is False, result.ErrorResponse.ErrorMessage
    assert result.SecurityResponse.SecurityResultSuccess is True
    return result.Appointments.AppointmentData if result.Appointments else []


def held(sim: Simulator, first: date, last: date) -> set[str]:
    days = (first + timedelta(days=n) for n in range((last - first).days + 1))
    return {str(row["id"]) for day in days for row in sim.appointments(day)}


def test_one_day_matches_what_the_simulator_holds(sim: Simulator, client: zeep.Client) -> None:
    day = workday(sim)
    rows = get_appointments(client, StartDate=us(day), EndDate=us(day))
    expected = sim.appointments(day)
    assert [row.ID for row in rows] == [str(row["id"]) for row in expected]
    for row, held_row in zip(rows, expected, strict=True):
        assert {name: row[name] for name in held_row["wire"]} == held_row["wire"]


def test_default_window_without_dates_starts_three_days_back_for_seven_days(
    sim: Simulator, client: zeep.Client
) -> None:
    day = today(sim)
    ids = {row.ID for row in get_appointments(client)}
    assert ids == held(sim, day - timedelta(days=3), day + timedelta(days=3))


def test_default_start_is_seven_days_back_when_only_the_end_is_given(
    sim: Simulator, client: zeep.Client
) -> None:
    day = today(sim)
    ids = {row.ID for row in get_appointments(client, EndDate=us(day))}
    assert ids == held(sim, day - timedelta(days=7), day)


def test_default_end_is_seven_days_after_the_start(sim: Simulator, client: zeep.Client) -> None:
    start = today(sim) + timedelta(days=10)
    ids = {row.ID for row in get_appointments(client, StartDate=us(start))}
    assert ids == held(sim, start, start + timedelta(days=6))


@pytest.mark.parametrize(
    "form",
    [
        lambda d: (f"{d.month}/{d.day}/{d.year} 12:00:00 AM", f"{d.month}/{d.day}/{d.year} 11:59:59 PM"),
        lambda d: (f"{d.isoformat()}T00:00:00", f"{d.isoformat()}T23:59:59"),
        lambda d: (d.isoformat(), d.isoformat()),
    ],
    ids=["us-with-time", "iso", "iso-date"],
)
def test_date_forms_select_the_same_day(sim: Simulator, client: zeep.Client, form: Any) -> None:
    day = workday(sim, 1)
    start, end = form(day)
    assert {row.ID for row in get_appointments(client, StartDate=start, EndDate=end)} == held(sim, day, day)


def test_iso_instants_in_utc_are_read_as_practice_wall_clock(sim: Simulator, client: zeep.Client) -> None:
    day = workday(sim)
    first = sim.appointments(day)[0]
    start = datetime.fromisoformat(first["start"])
    # 8:00 in Chicago is 13:00 or 14:00 UTC; a one-minute UTC window around it finds exactly that slot.
    utc = start.replace(tzinfo=ZoneInfo("America/Chicago")).astimezone(ZoneInfo("UTC"))
    rows = get_appointments(
        client,
        StartDate=utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        EndDate=(utc + timedelta(seconds=59)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    assert first["wire"]["ID"] in {row.ID for row in rows}
    assert {row.StartDate for row in rows} == {first["wire"]["StartDate"]}


def test_name_status_and_patient_filters(sim: Simulator, client: zeep.Client) -> None:
    day = workday(sim)
    held_rows = sim.appointments(day)
    window = {"StartDate": us(day), "EndDate": us(day)}
    sample = held_rows[0]
    by_resource = get_appointments(client, ResourceName=sample["provider_full_name"].upper(), **window)
    assert {r.ID for r in by_resource} == {
        str(r["id"]) for r in held_rows if r["provider_id"] == sample["provider_id"]
    }
    by_status = get_appointments(client, ConfirmationStatus=sample["status"], **window)
    assert {r.ID for r in by_status} == {str(r["id"]) for r in held_rows if r["status"] == sample["status"]}
    by_patient = get_appointments(client, PatientID=str(sample["patient_id"]), **window)
    assert {r.PatientID for r in by_patient} == {str(sample["patient_id"])}
    assert get_appointments(client, ServiceLocationName="Nowhere", **window) == []


def test_another_practice_name_finds_nothing(sim: Simulator, client: zeep.Client) -> None:
    day = today(sim)
    types = client.type_factory(KAREO)
    settings = load_settings({"APP_ENV": "test"})
    result = client.service.GetAppointments(
        request=types.GetAppointmentsReq(
            RequestHeader=types.RequestHeader(
                CustomerKey=settings.tebra_customer_key,
                Password=settings.tebra_password,
                User=settings.tebra_user,
            ),
            Fields=None,
            Filter=types.AppointmentFilter(
                PracticeName="Some Other Clinic", StartDate=us(day), EndDate=us(day)
            ),
        )
    )
    assert result.Appointments is None or result.Appointments.AppointmentData == []


def test_requested_columns_only(sim: Simulator, client: zeep.Client) -> None:
    day = workday(sim)
    rows = get_appointments(
        client,
        fields={"ID": True, "StartDate": True, "ConfirmationStatus": True},
        StartDate=us(day),
        EndDate=us(day),
    )
    assert rows
    for row in rows:
        assert row.ID and row.StartDate and row.ConfirmationStatus
        assert row.PatientFullName is None and row.ResourceName1 is None and row.LastModifiedDate is None


def test_incremental_sync_sees_only_what_changed(sim: Simulator, client: zeep.Client) -> None:
    day = workday(sim)
    target = sim.appointments(day)[3]
    changed = sim.edit_appointment("status", id=target["id"], status="Roomed")
    modified = datetime.fromisoformat(changed["last_modified"])
    rows = get_appointments(
        client,
        StartDate=us(day),
        EndDate=us(day),
        FromLastModifiedDate=f"{(modified - timedelta(seconds=5)).isoformat()}",
        ToLastModifiedDate=f"{(modified + timedelta(seconds=5)).isoformat()}",
    )
    assert [(row.ID, row.ConfirmationStatus) for row in rows] == [(str(target["id"]), "Roomed")]
    assert rows[0].LastModifiedDate == changed["wire"]["LastModifiedDate"]


def test_cancel_add_and_reschedule_show_up_in_the_next_read(sim: Simulator, client: zeep.Client) -> None:
    day = workday(sim, 2)
    rows = sim.appointments(day)
    sim.edit_appointment("cancel", id=rows[0]["id"])
    added = sim.edit_appointment("add", patient_id=20003, start=datetime.combine(day, time(16)))
    moved = sim.edit_appointment(
        "reschedule", id=rows[1]["id"], start=f"{(day + timedelta(days=1)).isoformat()}T09:00:00"
    )
    read = {row.ID: row for row in get_appointments(client, StartDate=us(day), EndDate=us(day))}
    assert read[str(rows[0]["id"])].ConfirmationStatus == "Cancelled"
    assert str(added["id"]) in read
    assert str(moved["id"]) not in read
