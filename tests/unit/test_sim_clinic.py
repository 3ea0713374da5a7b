"""The simulator's synthetic clinic is a pure function of (seed, date) and looks like a working day."""

from __future__ import annotations

import re
from datetime import date, datetime, time

from tebra_sim.clinic import CLOSE_HOUR, OPEN_HOUR, STATUSES, Clinic, seeded_day_of
from tebra_sim.store import AppointmentStore

MONDAY = date(2026, 3, 2)


def make_clinic(seed: int = 7, per_day: int = 40) -> Clinic:
    return Clinic(seed, "Lakeside Family Clinic", per_day)


def test_same_seed_and_day_give_the_same_schedule() -> None:
    assert make_clinic().appointments_on(MONDAY) == make_clinic().appointments_on(MONDAY)
    assert make_clinic().providers == make_clinic().providers
    assert make_clinic().patient(20010) == make_clinic().patient(20010)


def test_another_seed_or_day_gives_another_schedule() -> None:
    ids = [a.patient_id for a in make_clinic(7).appointments_on(MONDAY)]
    assert ids != [a.patient_id for a in make_clinic(8).appointments_on(MONDAY)]
    assert ids != [a.patient_id for a in make_clinic(7).appointments_on(date(2026, 3, 3))]


def test_a_clinic_day_holds_n_appointments_in_clinic_hours() -> None:
    rows = make_clinic(per_day=25).appointments_on(MONDAY)
    assert len(rows) == 25
    assert len({row.id for row in rows}) == 25
    assert all(time(OPEN_HOUR) <= row.start.time() < time(CLOSE_HOUR) for row in rows)
    assert all(row.start.date() == MONDAY and row.end > row.start for row in rows)
    assert rows == sorted(rows, key=lambda row: (row.start, row.id))
    assert all(seeded_day_of(row.id) == MONDAY for row in rows)


def test_weekends_are_closed() -> None:
    assert make_clinic().appointments_on(date(2026, 3, 7)) == []
    assert make_clinic().appointments_on(date(2026, 3, 8)) == []


def test_statuses_are_a_mix_spelled_as_tebra_does() -> None:
    clinic = make_clinic(per_day=60)
    seen = {row.status for day in range(2, 7) for row in clinic.appointments_on(date(2026, 3, day))}
    assert seen <= set(STATUSES)
    assert {"Scheduled", "Confirmed", "Check-in", "Check-out", "Cancelled", "No-show"} <= seen


def test_providers_locations_and_patients() -> None:
    clinic = make_clinic()
    assert 4 <= len(clinic.providers) <= 6
    assert len(clinic.locations) == 2
    patient = clinic.patient(20042)
    assert patient is not None
    assert re.fullmatch(r"\(\d{3}\) 555-01\d{2}", patient.home_phone)  # the range reserved for fiction
    assert patient.email.endswith("@example.test")
    assert date(1935, 1, 1) <= patient.dob <= date(2023, 12, 31)
    assert clinic.patient(1) is None


def test_seeded_rows_were_last_modified_before_their_day() -> None:
    # Only run-time edits may look recent, or incremental-sync tests would see noise.
    for row in make_clinic().appointments_on(MONDAY):
        assert row.created <= row.last_modified < datetime.combine(MONDAY, time.min)


def test_edits_bump_last_modified_and_reset_drops_them() -> None:
    clinic = make_clinic()
    now = datetime(2026, 3, 2, 9, 0)
    store = AppointmentStore(clinic, now=lambda: now)
    first = store.day(MONDAY)[0]
    changed = store.edit({"action": "status", "id": first.id, "status": "Roomed"})
    assert (changed.status, changed.last_modified) == ("Roomed", now)
    moved = store.edit({"action": "reschedule", "id": first.id, "start": "2026-03-03T10:00:00"})
    assert first.id not in {row.id for row in store.day(MONDAY)}
    assert moved in store.day(date(2026, 3, 3))
    added = store.edit({"action": "add", "patient_id": 20001, "start": "2026-03-02T16:45:00"})
    assert added in store.day(MONDAY) and added.created == now
    store.reset()
    assert store.day(MONDAY) == clinic.appointments_on(MONDAY)
