"""Typed calls to Tebra: every call is paced, checked and classified the same way.

``acquire the shared throttle → call → check ErrorResponse and SecurityResponse → classify any failure``,
with the latency and outcome of each call reported to the ``on_call`` hook (metrics and the breaker
attach there) and an optional ``before_call`` guard that may refuse a call (an open breaker). Free of
Celery: tasks turn the classified errors into retries or terminal statuses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
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
    classify,
    is_throttle_text,
    safe_tebra_text,
    throttled,
)
from tasks.tebra.throttle import TebraThrottle

OnCall = Callable[[str, float, str], None]  # (operation, seconds, outcome)
OnWait = Callable[[str, float], None]  # (operation, seconds waited for the throttle)
BeforeCall = Callable[[str], None]  # raises to refuse the call (an open breaker)

OUTCOME_OK = "ok"
MAX_DAYS_PER_CALL = 31  # SPEC.md §9: clients keep to ≤31 days; Tebra faults on long ranges
# Operations whose plain successes are read by tasks/tebra/reply.py instead of zeep: (array, item) element.
FAST_REPLIES = {"GetAppointments": ("Appointments", "AppointmentData")}

# Only the AppointmentData columns the mapping reads (explicit toggles; see SPEC.md §2 on placeholders).
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
        self.throttle_retries = throttle_retries
        self._sleep = sleep
        self._templates: dict[tuple[str, ...], template.Template] = {}

    # -- plumbing ----------------------------------------------------------------------------------

    @property
    def client(self) -> tebra_client.TebraClient:
        """The zeep client: the one given, else this process's (built on first use)."""
        return self._client or tebra_client.get_client(self.settings)

    @property
    def types(self) -> Any:
        return self.client.types

    def _header(self) -> Any:
        return tebra_client.request_header(self.settings, self.types)

    def call(self, operation: str, request: Any) -> Any:
        """Call ``operation`` paced, checked and classified; Tebra's throttle answers are retried briefly."""
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
                return reply.read(http.content, operation, array=shape[0], item=shape[1])
            except reply.UnreadableReply:
                pass
        binding = tebra.service._binding
        return binding.process_reply(tebra.zeep, binding.get(operation), http)

    def _report(self, operation: str, seconds: float, outcome: str) -> None:
        if self.on_call is not None:
            self.on_call(operation, seconds, outcome)

    # -- operations --------------------------------------------------------------------------------

    def appointments_request(
        self, start_local: datetime, end_local: datetime, *, modified_since: datetime | None = None
    ) -> Any:
        """The GetAppointmentsReq for one window (at most 31 days), as zeep's object."""
        return self._appointments_req(self._window(start_local, end_local, modified_since))

    def appointments_envelope(
        self, start_local: datetime, end_local: datetime, *, modified_since: datetime | None = None
    ) -> template.Prepared:
        """The same request as :meth:`appointments_request`, filled into zeep's serialisation of it."""
        window = self._window(start_local, end_local, modified_since)
        names = tuple(window)
        # One template per shape (with or without the last-modified pair); everything else in it comes from
        # this gateway's settings, which never change.
        found = self._templates.get(names)
        if found is None:
            request = self._appointments_req({name: template.mark(name) for name in names})
            found = template.build(self.client, "GetAppointments", request, names)
            self._templates[names] = found
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

    def _appointments_req(self, window: dict[str, str]) -> Any:
        t = self.types
        fields = t.AppointmentFieldsToReturn(**dict.fromkeys(APPOINTMENT_FIELDS, True))
        filter_ = t.AppointmentFilter(PracticeName=self.settings.tebra_practice_name, **window)
        return t.GetAppointmentsReq(RequestHeader=self._header(), Fields=fields, Filter=filter_)

    def get_appointments(
        self, start_local: datetime, end_local: datetime, *, modified_since: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Appointments starting in ``[start_local, end_local)``; naive datetimes are CLINIC_TZ wall time.

        Windows longer than 31 days are fetched in 31-day calls. Placeholder rows (empty ID) are dropped.
        """
        start, end = self._aware(start_local), self._aware(end_local)
        if end <= start:
            raise ValueError("end_local must be after start_local")
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        chunk_start = start
        while chunk_start < end:
            chunk_end = min(end, chunk_start + timedelta(days=MAX_DAYS_PER_CALL))
            request = self.appointments_envelope(chunk_start, chunk_end, modified_since=modified_since)
            response = self.call("GetAppointments", request)
            rows = _items(response.Appointments, "AppointmentData")
            for appointment in _mapped("GetAppointments", mapping.map_appointments, rows, self.tz):
                if appointment["id"] in seen or not _starts_within(appointment, chunk_start, chunk_end):
                    continue
                seen.add(appointment["id"])
                out.append(appointment)
            chunk_start = chunk_end
        return out

    def get_providers(self) -> list[dict[str, Any]]:
        """The practice's providers (no PHI), placeholder rows dropped."""
        t = self.types
        request = t.GetProvidersReq(
            RequestHeader=self._header(),
            Fields=t.ProviderFieldsToReturn(**dict.fromkeys(PROVIDER_FIELDS, True)),
            Filter=t.ProviderFilter(PracticeName=self.settings.tebra_practice_name),
        )
        response = self.call("GetProviders", request)
        rows = _items(response.Providers, "ProviderData")
        return [p for p in (mapping.map_provider(row) for row in rows) if p is not None]

    def get_patient(self, patient_id: str) -> dict[str, Any] | None:
        """One patient's details (name, date of birth …), or None when Tebra returns no patient."""
        try:
            numeric_id = int(str(patient_id).strip())
        except ValueError:
            raise ValueError("patient_id must be a Tebra numeric id") from None
        t = self.types
        filter_ = t.SinglePatientFilter(PatientID=numeric_id)
        request = t.GetPatientReq(RequestHeader=self._header(), Filter=filter_)
        response = self.call("GetPatient", request)
        return _mapped("GetPatient", mapping.map_patient, _plain(response.Patient), self.tz)

    def get_throttles(self) -> dict[str, int]:
        """Tebra's live throttle per operation, in ms (GetThrottles)."""
        request = self.types.GetThrottlesReq(RequestHeader=self._header())
        response = self.call("GetThrottles", request)
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
