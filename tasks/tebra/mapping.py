"""Tebra rows (every value a string) to plain dicts, and clinic-day windows as Tebra expects them.

Tebra renders dates as practice-local wall time with no offset ("9/23/2026 1:00:00 PM"; docs/tebra.md,
"Dates").
They are read in ``CLINIC_TZ`` and emitted as ISO-8601 with the offset in force at that instant.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tasks.patients.flow import flow_status_from_tebra

DOCTOR_RESOURCE_TYPE = "1"  # ResourceTypeIDn: 1 = Doctor, 2 = Practice Resource
RESOURCE_SLOTS = range(1, 11)

_US_FORMATS = (
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y",
)
_ISO_FRACTION = re.compile(r"\.(\d{1,6})\d*")
# The form every list reply uses ("9/23/2026 1:00:00 PM"), read without strptime (about 10x faster: a day's
# sync parses some 100 of these). Anything else falls through to the general forms below.
_US_WALL_TIME = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4}) (\d{1,2}):(\d{2}):(\d{2}) ([AP])M")


class TebraDateError(ValueError):
    """A date string from Tebra in none of the known forms."""


def text(value: Any) -> str | None:
    """A Tebra string column as stripped text; empty and nil become None."""
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def boolean(value: Any) -> bool | None:
    """Tebra's "True"/"False" column (any case); None when empty."""
    raw = text(value)
    if raw is None:
        return None
    lowered = raw.lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    raise ValueError(f"not a Tebra boolean: {raw!r}")


def integer(value: Any) -> int | None:
    """A numeric string column as int; None when empty."""
    raw = text(value)
    return None if raw is None else int(float(raw))


def localize(wall: datetime, tz: ZoneInfo) -> datetime:
    """Attach ``tz`` to a wall-clock time and normalise it through UTC.

    A time in the spring-forward gap (2:30 on a 23-hour day) comes out as the real instant it names
    (3:30 daylight time); a repeated fall-back time takes its first occurrence.
    """
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC).astimezone(tz)


def parse_tebra_datetime(value: Any, tz: ZoneInfo) -> datetime | None:
    """Parse a Tebra date in any form Tebra uses (docs/tebra.md, "Dates") as practice-local wall time; None
    when empty.

    Forms: ``M/d/yyyy h:mm:ss AM``, ``M/d/yyyy``, ISO ``yyyy-MM-ddTHH:mm:ss[.fff]`` with or without
    ``Z``. Tebra's list operations send wall time; a trailing ``Z`` there is a serializer habit, not
    UTC, so it is ignored. An explicit numeric offset (``-05:00``) is honoured.
    """
    raw = text(value)
    if raw is None:
        return None
    if isinstance(value, datetime):
        return localize(value, tz) if value.tzinfo is None else value.astimezone(tz)
    common = _wall_time(raw, tz)
    if common is not None:
        return common
    for fmt in _US_FORMATS:
        try:
            return localize(datetime.strptime(raw, fmt), tz)
        except ValueError:
            continue
    iso = raw[:-1] if raw.endswith(("Z", "z")) else raw
    iso = _ISO_FRACTION.sub(lambda m: "." + m.group(1).ljust(6, "0"), iso)  # .NET writes up to 7 digits
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        raise TebraDateError(f"unrecognised Tebra date ({len(raw)} chars)") from None
    return localize(parsed, tz) if parsed.tzinfo is None else parsed.astimezone(tz)


@functools.lru_cache(maxsize=4096)
def _wall_time(raw: str, tz: ZoneInfo) -> datetime | None:
    """The common form, remembered: a day's rows repeat the same slot times (datetimes are immutable)."""
    common = _US_WALL_TIME.fullmatch(raw)
    if common is None:
        return None
    month, day, year, hour, minute, second = (int(part) for part in common.groups()[:6])
    if not 1 <= hour <= 12:
        return None
    hour = hour % 12 + (12 if common.group(7) == "P" else 0)
    try:
        return localize(datetime(year, month, day, hour, minute, second), tz)
    except ValueError:
        raise TebraDateError(f"unrecognised Tebra date ({len(raw)} chars)") from None


def iso(value: datetime | None) -> str | None:
    """ISO-8601 with offset (seconds precision), or None."""
    return None if value is None else value.isoformat(timespec="seconds")


def tebra_wall_time(value: datetime, tz: ZoneInfo) -> str:
    """A datetime as the ``M/d/yyyy h:mm:ss AM`` wall-time string Tebra filters take, in ``tz``.

    A naive ``value`` is already wall time in ``tz``; an aware one is converted first.
    """
    wall = value.astimezone(tz) if value.tzinfo is not None else value
    hour12 = wall.hour % 12 or 12
    meridiem = "AM" if wall.hour < 12 else "PM"
    return f"{wall.month}/{wall.day}/{wall.year} {hour12}:{wall.minute:02d}:{wall.second:02d} {meridiem}"


def clinic_day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """Local midnight of ``day`` to local midnight of the next day, as aware datetimes (23 to 25 h apart)."""
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return start, end


def clinic_day_window(day: date, tz: ZoneInfo) -> tuple[str, str]:
    """The clinic day as Tebra's StartDate/EndDate filter strings (practice-local wall time)."""
    start, end = clinic_day_bounds(day, tz)
    return tebra_wall_time(start, tz), tebra_wall_time(end, tz)


def _getter(row: Any) -> Callable[[str], Any]:
    """How to read a row's columns: ``.get`` of the plain dicts of reply.py (and other mappings), else
    attributes (zeep's objects). Decided once per row: a day's sync reads some 600 columns."""
    if type(row) is dict or isinstance(row, Mapping):  # the plain dict first: the ABC check is slow
        return row.get
    return lambda name: getattr(row, name, None)


def _get(row: Any, name: str) -> Any:
    return _getter(row)(name)


_RESOURCE_COLUMNS = tuple(
    (f"ResourceTypeID{n}", f"ResourceID{n}", f"ResourceName{n}") for n in RESOURCE_SLOTS
)


def _provider(get: Callable[[str], Any]) -> tuple[str | None, str | None]:
    """The first resource that is a doctor (ResourceTypeIDn = 1), else resource 1."""
    for type_column, id_column, name_column in _RESOURCE_COLUMNS:
        is_doctor = text(get(type_column)) == DOCTOR_RESOURCE_TYPE
        if is_doctor and text(get(id_column)):
            return text(get(id_column)), text(get(name_column))
    return text(get("ResourceID1")), text(get("ResourceName1"))


def map_appointment(row: Any, tz: ZoneInfo) -> dict[str, Any] | None:
    """One AppointmentData row as an appointment dict; None for a placeholder row (empty ID)."""
    get = _getter(row)
    appointment_id = text(get("ID"))
    if appointment_id is None:
        return None
    start = parse_tebra_datetime(get("StartDate"), tz)
    end = parse_tebra_datetime(get("EndDate"), tz)
    duration = integer(get("AppointmentDuration"))
    if end is None and start is not None and duration is not None:
        end = (start.astimezone(UTC) + timedelta(minutes=duration)).astimezone(tz)
    tebra_status = text(get("ConfirmationStatus"))
    status, status_known = flow_status_from_tebra(tebra_status)
    provider_id, provider_name = _provider(get)
    appointment_type = text(get("Type"))
    return {
        "id": appointment_id,
        "patient_id": text(get("PatientID")),
        "patient_name": text(get("PatientFullName")),
        "start": iso(start),
        "end": iso(end),
        "tebra_status": tebra_status,
        "status": status,
        "status_known": status_known,
        "provider_id": provider_id,
        "provider_name": provider_name,
        "location": text(get("ServiceLocationName")),
        "reason": text(get("AppointmentReason1")),
        "type": appointment_type.upper() if appointment_type else None,
        "last_modified": iso(parse_tebra_datetime(get("LastModifiedDate"), tz)),
    }


def row_id(row: Any) -> str | None:
    """A row's appointment id (its ID column), or None."""
    return text(_get(row, "ID"))


def row_day(row: Any, tz: ZoneInfo) -> str | None:
    """The clinic-local date of a row's start (YYYY-MM-DD), or None when its start cannot be read."""
    try:
        start = parse_tebra_datetime(_get(row, "StartDate"), tz)
    except ValueError:
        return None
    return start.date().isoformat() if start else None


def map_appointments(rows: Iterable[Any], tz: ZoneInfo) -> list[dict[str, Any]]:
    """Every real row as an appointment dict, placeholder rows dropped, first occurrence of an id kept."""
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for row in rows:
        mapped = map_appointment(row, tz)
        if mapped is None or mapped["id"] in seen:
            continue
        seen.add(mapped["id"])
        out.append(mapped)
    return out


def map_provider(row: Any) -> dict[str, Any] | None:
    """One ProviderData row as a provider dict (no PHI); None for a placeholder row."""
    provider_id = text(_get(row, "ID"))
    if provider_id is None:
        return None
    return {
        "id": provider_id,
        "full_name": text(_get(row, "FullName")),
        "first_name": text(_get(row, "FirstName")),
        "last_name": text(_get(row, "LastName")),
        "degree": text(_get(row, "Degree")),
        "specialty": text(_get(row, "SpecialtyName")),
        "department": text(_get(row, "DepartmentName")),
        "npi": text(_get(row, "NationalProviderIdentifier")),
        "type": text(_get(row, "Type")),
        "active": boolean(_get(row, "Active")),
    }


def map_patient(row: Any, tz: ZoneInfo) -> dict[str, Any] | None:
    """The PatientData of GetPatient as the details the board shows; None when Tebra sent no patient."""
    if row is None:
        return None
    patient_id = text(_get(row, "ID"))
    if patient_id is None:
        return None
    dob = parse_tebra_datetime(_get(row, "DOB"), tz)
    return {
        "id": patient_id,
        "full_name": text(_get(row, "PatientFullName")),
        "first_name": text(_get(row, "FirstName")),
        "middle_name": text(_get(row, "MiddleName")),
        "last_name": text(_get(row, "LastName")),
        "dob": dob.date().isoformat() if dob else None,
        "gender": text(_get(row, "Gender")),
        "medical_record_number": text(_get(row, "MedicalRecordNumber")),
    }


def throttle_endpoint(name: str) -> str:
    """GetThrottles' Endpoint as an operation name ("KareoServices.GetPatient" → "GetPatient")."""
    return re.split(r"[./\\:]", name.strip())[-1]


def throttle_ms(value: Any) -> int:
    """ThrottleTimeMs (a double) as whole milliseconds, rounded up so we never pace faster."""
    return math.ceil(float(value))
