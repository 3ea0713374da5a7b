"""One Tebra call, paced, checked and classified the same way whatever the operation.

``acquire the shared throttle → call → check ErrorResponse and SecurityResponse → classify any failure``,
with the latency and outcome of each call reported to the ``on_call`` hook (metrics and the breaker
attach there) and an optional ``before_call`` guard that may refuse a call (an open breaker). Free of
Celery: tasks turn the classified errors into retries or terminal statuses. The operations themselves
(typed methods returning plain dicts) are :class:`tasks.tebra.gateway.TebraGateway`, built on this.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from types import FunctionType
from typing import Any
from zoneinfo import ZoneInfo

import requests
from zeep import exceptions as zeep_exc

from config.settings import Settings, load_settings
from tasks.tebra import client as tebra_client
from tasks.tebra import reply, template
from tasks.tebra.errors import TebraError, TebraSecurityError, TebraThrottled, TebraUpstreamError, classify
from tasks.tebra.response import check_response
from tasks.tebra.throttle import TebraThrottle

log = logging.getLogger(__name__)

OnCall = Callable[[str, float, str], None]  # (operation, seconds, outcome)
OnUnknown = Callable[[str, str], None]  # (operation, member): a reply member the schema does not know
OnRefused = Callable[[TebraSecurityError], None]  # Tebra refused the credentials (the latch attaches here)
OnWait = Callable[[str, float], None]  # (operation, seconds waited for the throttle)
BeforeCall = Callable[[str], None]  # raises to refuse the call (an open breaker)

OUTCOME_OK = "ok"
# Operations whose successes are read by tasks/tebra/reply.py, as WCF would, not by zeep in strict mode:
# (array member, item element or None for one object, the item's schema type).
FAST_REPLIES: dict[str, tuple[str, str | None, str]] = {
    "GetAppointments": ("Appointments", "AppointmentData", "AppointmentData"),
    "GetProviders": ("Providers", "ProviderData", "ProviderData"),
    "GetPractices": ("Practices", "PracticeData", "PracticeData"),
    "GetThrottles": ("ThrottleDetails", "ThrottleDetail", "ThrottleDetail"),
    "GetPatient": ("Patient", None, "PatientData"),
}


class TebraCaller:
    """Calls to Tebra through the throttle, the hooks and the classification of failures."""

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
        self.tz = ZoneInfo(self.settings.clinic_tz)  # Tebra's wall times are the clinic's
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
        # The operations' prepared envelopes (tasks/tebra/template.py): they hold the RequestHeader, so they
        # live here, where use_credentials drops them.
        self._templates: dict[tuple[str, ...], template.Template] = {}

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
