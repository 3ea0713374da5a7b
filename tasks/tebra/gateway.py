"""Typed calls to Tebra: every call is paced, checked and classified the same way.

``acquire the shared throttle → call → check ErrorResponse and SecurityResponse → classify any failure``,
with the latency and outcome of each call reported to the ``on_call`` hook (metrics and the breaker
attach there) and an optional ``before_call`` guard that may refuse a call (an open breaker). Free of
Celery: tasks turn the classified errors into retries or terminal statuses.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from types import FunctionType
from typing import Any
from zoneinfo import ZoneInfo

import requests
from zeep import exceptions as zeep_exc
from zeep.helpers import serialize_object

from config.settings import Settings, load_settings
from tasks.tebra import client as tebra_client
from tasks.tebra import mapping, reply, template
from tasks.tebra.errors import (
    TebraBusinessError,
    TebraError,
    TebraSecurityError,
    TebraThrottled,
    TebraUpstreamError,
    classify,
    is_throttle_text,
    safe_tebra_text,
    throttled,
)
from tasks.tebra.throttle import TebraThrottle

log = logging.getLogger(__name__)

OnCall = Callable[[str, float, str], None]  # (operation, seconds, outcome)
OnUnknown = Callable[[str, str], None]  # (operation, member): a reply member the schema does not know
OnRefused = Callable[[TebraSecurityError], None]  # Tebra refused the credentials (the latch attaches here)
OnWait = Callable[[str, float], None]  # (operation, seconds waited for the throttle)
BeforeCall = Callable[[str], None]  # raises to refuse the call (an open breaker)

OUTCOME_OK = "ok"
MAX_DAYS_PER_CALL = 31  # docs/tebra.md, "Dates": Tebra faults on long ranges
# Operations whose successes are read by tasks/tebra/reply.py, as WCF would, not by zeep in strict mode:
# (array member, item element or None for one object, the item's schema type).
FAST_REPLIES: dict[str, tuple[str, str | None, str]] = {
    "GetAppointments": ("Appointments", "AppointmentData", "AppointmentData"),
    "GetProviders": ("Providers", "ProviderData", "ProviderData"),
    "GetPractices": ("Practices", "PracticeData", "PracticeData"),
    "GetThrottles": ("ThrottleDetails", "ThrottleDetail", "ThrottleDetail"),
    "GetPatient": ("Patient", None, "PatientData"),
}

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


class TebraGateway:
    """Tebra's operations as typed methods returning plain dicts."""

    def __init__(
        self,
        settings: Settings | None = None,
        redis: Any = None,
        *,
        throttle: TebraThrottle | None = None,
        client: tebra_client.TebraClient | None = None,
        on_call: OnCall | None = None,
        on_wait: OnWait | None = None,
        before_call: BeforeCall | None = None,
        on_unknown: OnUnknown | None = None,
        on_refused: OnRefused | None = None,
        throttle_retries: int = 2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings or load_settings()
        self.tz = ZoneInfo(self.settings.clinic_tz)
        if throttle is None and redis is not None:
            throttle = TebraThrottle.from_settings(redis, self.settings)
        self.throttle = throttle
        self._client = client
        self.on_call = on_call
        self.on_wait = on_wait
        self.before_call = before_call
        self.on_unknown = on_unknown
        self.on_refused = on_refused
        self._known: dict[str, frozenset[str]] = {}
        self.throttle_retries = throttle_retries
        self._sleep = sleep
        self._templates: dict[tuple[str, ...], template.Template] = {}

    # -- plumbing ----------------------------------------------------------------------------------

    @property
    def client(self) -> tebra_client.TebraClient:
        """The zeep client: the one given, else this process's (built on first use).

        Building it loads the WSDL: when that fails (Tebra unreachable, a maintenance page for a WSDL) the
        failure is an upstream one like any failed call: classified, reported to ``on_call`` (the breaker
        counts it, the metrics show it under the operation ``WSDL``) and retried by the task, never an
        unclassified exception that leaves a day ``running``.
        """
        if self._client is not None:
            return self._client
        started = time.perf_counter()
        try:
            return tebra_client.get_client(self.settings)
        except tebra_client.WSDL_FAILURES as exc:
            error = TebraUpstreamError(
                f"WSDL: Tebra's service description unreachable ({type(exc).__name__})"
            )
        self._report("WSDL", time.perf_counter() - started, error.outcome)
        raise error

    @property
    def types(self) -> Any:
        return self.client.types

    def use_credentials(self, user: str, password: str, customer_key: str) -> None:
        """Call Tebra as this account from now on (an operator fixed the credentials: no restart needed)."""
        self.settings = replace(
            self.settings, tebra_user=user, tebra_password=password, tebra_customer_key=customer_key
        )
        self._templates.clear()  # they hold the old RequestHeader

    def _header(self) -> Any:
        return tebra_client.request_header(self.settings, self.types)

    def call(self, operation: str, request: Any) -> Any:
        """Call ``operation`` paced, checked and classified; Tebra's throttle answers are retried briefly.

        ``request`` is the request, or a function that builds it: built after ``before_call`` admitted the
        call, so it carries the credentials in force then (an operator's resume may have changed them).
        """
        attempt = 0
        while True:
            try:
                return self._call_once(operation, request)
            except TebraThrottled as exc:
                if attempt >= self.throttle_retries:
                    raise
                attempt += 1
                if self.throttle is not None and self.throttle.enabled:
                    self.throttle.mark_called(operation)  # the next acquire waits a full interval
                else:
                    self._sleep(exc.retry_after_s)

    def _call_once(self, operation: str, request: Any) -> Any:
        if self.before_call is not None:
            self.before_call(operation)
        if isinstance(request, FunctionType | functools.partial):
            request = request()
        if self.throttle is not None:
            waited = self.throttle.acquire(operation)
            if self.on_wait is not None:
                self.on_wait(operation, waited)
        started = time.perf_counter()
        error: TebraError | None = None
        try:
            response = self._send(operation, request)
            check_response(operation, response, self.settings)
        except TebraError as exc:
            error = exc
        except (zeep_exc.Error, requests.RequestException) as exc:
            status, body = tebra_client.last_response()
            error = classify(exc, operation, raw_body=body, status_code=status)
        finally:
            elapsed = time.perf_counter() - started
        if isinstance(error, TebraSecurityError) and self.on_refused is not None:
            self.on_refused(error)  # first: the latch is set before the call is reported finished
        self._report(operation, elapsed, error.outcome if error else OUTCOME_OK)
        if error is not None:
            # Raised outside the except block: zeep's exception (which may quote the reply) is not chained.
            raise error
        return response

    def _send(self, operation: str, request: Any) -> Any:
        """Send ``request``; a plain success of a list operation is read by tasks/tebra/reply.py, the rest
        (faults, errors, anything unexpected) by zeep, exactly as it always was."""
        tebra = self.client
        shape = FAST_REPLIES.get(operation)
        if isinstance(request, template.Prepared):  # serialised already (tasks/tebra/template.py)
            http = tebra.zeep.transport.post(tebra.address, request.body, request.headers)
        elif shape is None:
            return getattr(tebra.service, operation)(request=request)
        else:
            with tebra.zeep.settings(raw_response=True):
                http = getattr(tebra.service, operation)(request=request)
        if shape is not None and http.status_code == 200:
            try:
                read = reply.read(
                    http.content, operation, array=shape[0], item=shape[1], known=self._members(shape[2])
                )
            except reply.UnreadableReply:
                pass
            else:
                self._note_unknown(operation, read.unknown_members)
                return read
        binding = tebra.service._binding
        return binding.process_reply(tebra.zeep, binding.get(operation), http)

    def _members(self, type_name: str) -> frozenset[str]:
        """The members the WSDL gives ``type_name`` (any other member of a reply is ignored, and counted)."""
        known = self._known.get(type_name)
        if known is None:
            found = self.client.zeep.get_type(f"{{{tebra_client.SCHEMA_NS}}}{type_name}")
            known = self._known[type_name] = frozenset(name for name, _ in found.elements)
        return known

    def _note_unknown(self, operation: str, members: list[str]) -> None:
        if not members:
            return
        # Member names only (schema names, never values): Tebra added a field, or the WSDL is older than it.
        log.info(
            "tebra reply has members the schema does not know",
            extra={"operation": operation, "members": members[:20]},
        )
        if self.on_unknown is not None:
            for member in members:
                self.on_unknown(operation, member)

    def _report(self, operation: str, seconds: float, outcome: str) -> None:
        if self.on_call is not None:
            self.on_call(operation, seconds, outcome)

    # -- operations --------------------------------------------------------------------------------

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
            for row in _items(response.Appointments, "AppointmentData"):
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
        rows = _items(response.Providers, "ProviderData")
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
        for row in _items(response.Practices, "PracticeData"):
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
        return _mapped("GetPatient", mapping.map_patient, _plain(response.Patient), self.tz)

    def get_throttles(self) -> dict[str, int]:
        """Tebra's live throttle per operation, in ms (GetThrottles)."""
        response = self.call("GetThrottles", lambda: self.types.GetThrottlesReq(RequestHeader=self._header()))
        out: dict[str, int] = {}
        for detail in _items(response.ThrottleDetails, "ThrottleDetail"):
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


def check_response(operation: str, response: Any, settings: Settings | None = None) -> None:
    """Raise the classified error a schema-valid reply carries (ErrorResponse, SecurityResponse)."""
    if response is None:
        raise TebraBusinessError(f"{operation}: empty reply from Tebra", operation)
    error = getattr(response, "ErrorResponse", None)
    is_error = bool(error is not None and error.IsError)
    message = (error.ErrorMessage or "") if error is not None else ""
    if is_error and is_throttle_text(message):
        raise throttled(operation, message, "ErrorResponse")
    security = getattr(response, "SecurityResponse", None)
    if security is not None:
        problem = _security_problem(security)
        if problem:
            raise TebraSecurityError(f"{operation}: {_redact(problem, settings)}", operation)
    if is_error:
        reported = safe_tebra_text(message)
        raise TebraBusinessError(f"{operation}: Tebra reported an error: {reported}", operation)


def _security_problem(security: Any) -> str | None:
    """What is wrong with a SecurityResponse, or None when it grants the call."""
    flags = {
        "Authenticated": security.Authenticated,
        "Authorized": security.Authorized,
        "CustomerKeyValid": security.CustomerKeyValid,
        "SecurityResultSuccess": security.SecurityResultSuccess,
    }
    missing = _permissions_missing(security)
    failed = [name for name, value in flags.items() if value is False]
    if not failed and not missing:
        return None
    parts = ["Tebra refused the call"]
    if failed:
        parts.append(", ".join(f"{name}=false" for name in failed))
    if security.SecurityResult:
        parts.append(f"SecurityResult: {' '.join(str(security.SecurityResult).split())[:200]}")
    if missing:
        parts.append(f"missing permissions: {', '.join(str(p) for p in missing)[:300]}")
    return "; ".join(parts)


def _permissions_missing(security: Any) -> list[str]:
    """PermissionsMissing/Permission (an ArrayOfstring) as a list of names."""
    holder = _plain(security.PermissionsMissing)
    permission = holder.get("Permission") if isinstance(holder, dict) else None
    return [str(name) for name in _items(permission, "string") if name]


def _redact(message: str, settings: Settings | None) -> str:
    """Never echo a credential, whatever Tebra put in its security text."""
    if settings is None:
        return message
    for secret in (settings.tebra_password, settings.tebra_customer_key):
        if secret:
            message = message.replace(secret, "***")
    return message


def _mapped(operation: str, mapper: Callable[..., Any], *args: Any) -> Any:
    """Run a mapper; a value Tebra sent in no known form fails the call as a business error (no PHI)."""
    try:
        return mapper(*args)
    except ValueError as exc:
        raise TebraBusinessError(
            f"{operation}: unreadable value in Tebra's reply ({type(exc).__name__})", operation
        ) from None


def _plain(value: Any) -> Any:
    """A zeep object as plain dicts and lists (None stays None)."""
    return None if value is None else serialize_object(value, dict)


def _items(container: Any, item: str) -> list[Any]:
    """The repeated ``item`` of a zeep ArrayOf… (nil, absent or empty give [])."""
    if container is None:
        return []
    plain = container if isinstance(container, dict | list) else _plain(container)
    values = plain.get(item) if isinstance(plain, dict) else plain
    if values is None:
        return []
    return list(values) if isinstance(values, list) else [values]


def _starts_within(appointment: dict[str, Any], start: datetime, end: datetime) -> bool:
    """True when the appointment starts in ``[start, end)`` (rows without a start are kept)."""
    if not appointment["start"]:
        return True
    begins = datetime.fromisoformat(appointment["start"])
    return start <= begins < end
