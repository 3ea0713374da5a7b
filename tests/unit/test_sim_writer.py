"""The simulator's fast paths write and draw exactly what the general ones do (docs/simulator.md, speed)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import pytest

from tebra_sim import envelope
from tebra_sim.clinic import _below
from tebra_sim.dates import render
from tebra_sim.schema import load_schema

ROW = {
    "AppointmentDuration": "30",
    "ConfirmationStatus": "Check-in",
    "ID": "9825005",
    "Notes": None,
    "PatientFullName": "Zetu V. Zhazin",
    "PracticeName": "A&B <Care> \"Clinic\" 'West' 100%",
    "StartDate": "3/2/2026 9:15:00 AM",
    "NotAColumn": "dropped",
}


def written(value: Any) -> bytes:
    return envelope.response(load_schema(), "GetAppointments", {"Appointments": value})


@pytest.mark.parametrize(
    "rows",
    [
        [],
        [ROW],
        [ROW, {**ROW, "Notes": "Bring <labs> & forms", "ID": "2"}, {"ID": ""}, {**ROW, "ID": None}],
    ],
)
@pytest.mark.parametrize(
    "columns", [None, {"ID", "Notes", "PracticeName", "ResourceID7"}, {"AuthorizationID"}]
)
def test_flat_items_are_written_as_the_same_dicts_would_be(
    rows: list[dict[str, str | None]], columns: set[str] | None
) -> None:
    narrowed = [{k: v for k, v in row.items() if columns is None or k in columns} for row in rows]
    assert written(envelope.FlatItems(rows, columns)) == written(narrowed)


def test_below_draws_what_randrange_draws() -> None:
    # Each seeded day must stay what it was when it was generated with randrange, randint and choice.
    ours, theirs = random.Random("seed:2026-03-02"), random.Random("seed:2026-03-02")
    for n in (1, 2, 5, 6, 8, 36, 60, 73, 600, 601, 2**40 + 3):
        assert [_below(ours, n) for _ in range(300)] == [theirs.randrange(n) for _ in range(300)]


def test_render_is_the_dotnet_general_format_for_every_second_of_a_day() -> None:
    day = datetime(2026, 3, 2)
    for seconds in range(0, 86400, 7):
        value = day + timedelta(seconds=seconds)
        hour = value.hour % 12 or 12
        suffix = "PM" if value.hour >= 12 else "AM"
        assert render(value) == f"3/2/2026 {hour}:{value.minute:02d}:{value.second:02d} {suffix}"
    assert render(datetime(1999, 12, 31, 23, 59, 59, 999999)) == "12/31/1999 11:59:59 PM"
