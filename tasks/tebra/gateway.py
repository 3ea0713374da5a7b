"""Tebra's operations as typed methods returning plain dicts (GetAppointments, GetProviders, GetPractices,
GetPatient, GetThrottles).

Each builds its request from zeep's types and sends it through :meth:`tasks.tebra.caller.TebraCaller.call`,
which paces, checks and classifies every call the same way; rows are mapped by tasks/tebra/mapping.py.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tasks.tebra import mapping, template
from tasks.tebra.caller import TebraCaller
from tasks.tebra.errors import TebraBusinessError
from tasks.tebra.response import items, plain

log = logging.getLogger(__name__)

MAX_DAYS_PER_CALL = 31  # docs/tebra.md, "Dates": Tebra faults on long ranges

# Only the AppointmentData columns the mapping reads (explicit toggles; docs/tebra.md, "List reads and their
# rows", on placeholders).
APPOINTMENT_FIELDS = (
    "AppointmentDuration",
    "AppointmentReason1",
    "ConfirmationStatus",
    "EndDate",
    "ID",
    "LastModifiedDate",
    "PatientFullName",
    "PatientID",
    *(f"{column}{n}" for column in ("ResourceID", "ResourceName", "ResourceTypeID") for n in range(1, 11)),
    "ServiceLocationName",
    "StartDate",
    "Type",
)
PROVIDER_FIELDS = (
    "Active",
    "Degree",
    "DepartmentName",
    "FirstName",
    "FullName",
    "ID",
    "LastName",
    "NationalProviderIdentifier",
    "SpecialtyName",
    "Type",
)


@dataclass(frozen=True)
class RejectedRow:
    """A row that could not be mapped: its appointment id ('' when it has none) and day (None: unknown)."""

    id: str
    day: str | None


class AppointmentRows(list[dict[str, Any]]):
    """The appointments of a read, with what it did not return: ``placeholders`` (rows with an empty ID,
    which are never "no appointments") and ``rejected`` rows."""

    def __init__(self, rows: Any = ()) -> None:
        super().__init__(rows)
        self.placeholders = 0
        self.rejected: list[RejectedRow] = []


class TebraGateway(TebraCaller):
    """Tebra's operations as typed methods returning plain dicts."""

    def appointments_request(
        self,
        start_local: datetime,
        end_local: datetime,
        *,
        modified_since: datetime | None = None,
        all_fields: bool = False,
    ) -> Any:
        """The GetAppointmentsReq for one window (at most 31 days), as zeep's object."""
        return self._appointments_req(self._window(start_local, end_local, modified_since), all_fields)

    def appointments_envelope(
        self,
        start_local: datetime,
        end_local: datetime,
        *,
        modified_since: datetime | None = None,
        all_fields: bool = False,
    ) -> template.Prepared:
        """The same request as :meth:`appointments_request`, filled into zeep's serialisation of it."""
        window = self._window(start_local, end_local, modified_since)
        names = tuple(window)
        # One template per shape (with or without the last-modified pair, toggles or an empty <Fields/>);
        # the rest comes from this gateway's settings and credentials (use_credentials drops the templates).
        shape = (*names, "<Fields/>") if all_fields else names
        found = self._templates.get(shape)
        if found is None:
            request = self._appointments_req({name: template.mark(name) for name in names}, all_fields)
            found = template.build(self.client, "GetAppointments", request, names)
            self._templates[shape] = found
        return found.fill(window)

    def _window(
        self, start_local: datetime, end_local: datetime, modified_since: datetime | None
    ) -> dict[str, str]:
        window: dict[str, str] = {
            "StartDate": mapping.tebra_wall_time(start_local, self.tz),
            "EndDate": mapping.tebra_wall_time(end_local, self.tz),
        }
        if modified_since is not None:
            # Tebra wants the pair; the end is a day ahead so clock skew never hides a change.
            window["FromLastModifiedDate"] = mapping.tebra_wall_time(modified_since, self.tz)
            window["ToLastModifiedDate"] = mapping.tebra_wall_time(
                datetime.now(self.tz) + timedelta(days=1), self.tz
            )
        return window

    def _appointments_req(self, window: dict[str, str], all_fields: bool = False) -> Any:
        t = self.types
        # Explicit toggles keep the reply small; an empty <Fields/> asks for every column, which is what
        # integrators found brings the rows back when toggles get a placeholder row (docs/tebra.md).
        toggles = {} if all_fields else dict.fromkeys(APPOINTMENT_FIELDS, True)
        fields = t.AppointmentFieldsToReturn(**toggles)
        filter_ = t.AppointmentFilter(PracticeName=self.settings.tebra_practice_name, **window)
        return t.GetAppointmentsReq(RequestHeader=self._header(), Fields=fields, Filter=filter_)

    def get_appointments(
        self,
        start_local: datetime,
        end_local: datetime,
        *,
        modified_since: datetime | None = None,
        all_fields: bool = False,
    ) -> AppointmentRows:
        """Appointments starting in ``[start_local, end_local)``; naive datetimes are CLINIC_TZ wall time.

        Windows longer than 31 days are fetched in 31-day calls. Placeholder rows (empty ID) are not
        appointments: they are counted in ``placeholders``, never returned. A row that cannot be mapped (a
        date in no known form) is set aside in ``rejected`` (its id and day, logged without PHI) and the
        others are returned. ``all_fields`` sends an empty ``<Fields/>`` instead of the column toggles.
        """
        start, end = self._aware(start_local), self._aware(end_local)
        if end <= start:
            raise ValueError("end_local must be after start_local")
        out = AppointmentRows()
        seen: set[str] = set()
        chunk_start = start
        while chunk_start < end:
            chunk_end = min(end, chunk_start + timedelta(days=MAX_DAYS_PER_CALL))
            build = functools.partial(
                self.appointments_envelope,
                chunk_start,
                chunk_end,
                modified_since=modified_since,
                all_fields=all_fields,
            )
            response = self.call("GetAppointments", build)
            for row in items(response.Appointments, "AppointmentData"):
                appointment = self._map_row(row, out)
                if appointment is None or appointment["id"] in seen:
                    continue
                if not _starts_within(appointment, chunk_start, chunk_end):
                    continue
                seen.add(appointment["id"])
                out.append(appointment)
            chunk_start = chunk_end
        return out

    def _map_row(self, row: Any, out: AppointmentRows) -> dict[str, Any] | None:
        """One row mapped, or None: a placeholder (counted) or a row set aside (noted, without PHI)."""
        try:
            appointment = mapping.map_appointment(row, self.tz)
        except ValueError as exc:
            rejected = RejectedRow(mapping.row_id(row) or "", mapping.row_day(row, self.tz))
            out.rejected.append(rejected)
            log.warning(
                "appointment row set aside: a value in no known form",
                extra={"appointment_id": rejected.id, "error": type(exc).__name__},
            )
            return None
        if appointment is None:
            out.placeholders += 1
        return appointment

    def get_providers(self) -> list[dict[str, Any]]:
        """The practice's providers (no PHI), placeholder rows dropped."""
        t = self.types
        response = self.call(
            "GetProviders",
            lambda: t.GetProvidersReq(
                RequestHeader=self._header(),
                Fields=t.ProviderFieldsToReturn(**dict.fromkeys(PROVIDER_FIELDS, True)),
                Filter=t.ProviderFilter(PracticeName=self.settings.tebra_practice_name),
            ),
        )
        rows = items(response.Providers, "ProviderData")
        return [p for p in (mapping.map_provider(row) for row in rows) if p is not None]

    def get_practices(self, *, every: bool = False) -> list[dict[str, Any]]:
        """The practices the account sees under TEBRA_PRACTICE_NAME (Tebra matches the name whole), or every
        practice it sees (``every``); each as {"id", "name", "active"}."""
        t = self.types
        name = None if every else self.settings.tebra_practice_name
        response = self.call(
            "GetPractices",
            lambda: t.GetPracticesReq(
                RequestHeader=self._header(),
                Fields=t.PracticeFieldsToReturn(ID=True, PracticeName=True, Active=True),
                Filter=t.PracticeFilter(PracticeName=name),
            ),
        )
        out = []
        for row in items(response.Practices, "PracticeData"):
            practice_id = mapping.text(row.get("ID"))
            if practice_id is not None:
                out.append(
                    {
                        "id": practice_id,
                        "name": mapping.text(row.get("PracticeName")),
                        "active": row.get("Active"),
                    }
                )
        return out

    def get_patient(self, patient_id: str) -> dict[str, Any] | None:
        """One patient's details (name, date of birth …), or None when Tebra returns no patient."""
        try:
            numeric_id = int(str(patient_id).strip())
        except ValueError:
            raise ValueError("patient_id must be a Tebra numeric id") from None
        t = self.types
        filter_ = t.SinglePatientFilter(PatientID=numeric_id)
        response = self.call(
            "GetPatient", lambda: t.GetPatientReq(RequestHeader=self._header(), Filter=filter_)
        )
        return _mapped("GetPatient", mapping.map_patient, plain(response.Patient), self.tz)

    def get_throttles(self) -> dict[str, int]:
        """Tebra's live throttle per operation, in ms (GetThrottles)."""
        response = self.call("GetThrottles", lambda: self.types.GetThrottlesReq(RequestHeader=self._header()))
        out: dict[str, int] = {}
        for detail in items(response.ThrottleDetails, "ThrottleDetail"):
            endpoint = mapping.text(detail.get("Endpoint"))
            value = detail.get("ThrottleTimeMs")
            if endpoint and value is not None:
                out[mapping.throttle_endpoint(endpoint)] = mapping.throttle_ms(value)
        return out

    def refresh_throttles(self) -> dict[str, int]:
        """Read GetThrottles and store the values for every process's throttle; returns them."""
        intervals = self.get_throttles()
        if self.throttle is not None:
            self.throttle.store_intervals(intervals)
        return intervals

    def _aware(self, value: datetime) -> datetime:
        return mapping.localize(value, self.tz) if value.tzinfo is None else value.astimezone(self.tz)


def _mapped(operation: str, mapper: Callable[..., Any], *args: Any) -> Any:
    """Run a mapper; a value Tebra sent in no known form fails the call as a business error (no PHI)."""
    try:
        return mapper(*args)
    except ValueError as exc:
        raise TebraBusinessError(
            f"{operation}: unreadable value in Tebra's reply ({type(exc).__name__})", operation
        ) from None


def _starts_within(appointment: dict[str, Any], start: datetime, end: datetime) -> bool:
    """True when the appointment starts in ``[start, end)`` (rows without a start are kept)."""
    if not appointment["start"]:
        return True
    begins = datetime.fromisoformat(appointment["start"])
    return start <= begins < end
