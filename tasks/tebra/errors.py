"""Tebra failures, classified by what the caller should do about them.

- :class:`TebraThrottled`: "requested more than allowed" as an ErrorResponse, as HTTP 429 (zeep Fault or
  TransportError), or in a body zeep cannot parse (XMLParseError). The caller waits ``retry_after_s``.
- :class:`TebraSecurityError`: SecurityResponse not successful (Authenticated, Authorized or
  CustomerKeyValid false; PermissionsMissing). Fatal: never retried.
- :class:`TebraUpstreamError`: InternalServiceFault, HTTP 5xx, timeout, connection error, an unreadable
  reply. Counts toward the breaker; retried with backoff.
- :class:`TebraBusinessError`: ErrorResponse.IsError with any other message, or a request the service
  could not read. Fails the task, not the breaker.

Messages carry the operation and the kind of failure, never patient data and never credentials: Tebra's
own texts are quoted only when they are known not to hold PHI (:data:`SAFE_TEBRA_MESSAGES`).
"""

from __future__ import annotations

import re
from typing import Any

import requests
from zeep import exceptions as zeep_exc

THROTTLE_TEXT = "requested more than allowed"
_INTERVAL_RE = re.compile(r"time interval\s+(\d+)\s*milliseconds", re.IGNORECASE)

# Tebra error texts that never carry patient data, so they may appear in our messages and logs.
SAFE_TEBRA_MESSAGES = (
    "Object reference not set to an instance of an object.",
    "Invalid user name and/or password",
    "The server was unable to process the request due to an internal error.",
)


class TebraError(Exception):
    """A Tebra call failed; ``operation`` names the SOAP operation; ``retryable``: trying again may help."""

    outcome = "error"
    retryable = False

    def __init__(self, message: str, operation: str | None = None) -> None:
        super().__init__(message)
        self.operation = operation

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from the message alone (Celery and pickle call cls(*args)); the rest is safe state.
        return (type(self), (str(self),), self.__dict__)


class TebraThrottled(TebraError):
    """Tebra refused the call as too frequent; ``interval_ms`` is its stated interval when it said one."""

    outcome = "throttled"
    retryable = True

    def __init__(self, message: str, operation: str | None = None, interval_ms: int | None = None) -> None:
        super().__init__(message, operation)
        self.interval_ms = interval_ms

    @property
    def retry_after_s(self) -> float:
        """How long to wait before the next try: Tebra's interval, or one second when it gave none."""
        return (self.interval_ms or 1000) / 1000.0


class TebraSecurityError(TebraError):
    """The account cannot make this call (credentials, customer key, permissions). Fatal: never retried."""

    outcome = "security"


class TebraUpstreamError(TebraError):
    """Tebra is failing (fault, 5xx, timeout, connection): counts toward the breaker, retried with backoff."""

    outcome = "upstream"
    retryable = True

    def __init__(self, message: str, operation: str | None = None, status_code: int | None = None) -> None:
        super().__init__(message, operation)
        self.status_code = status_code


class TebraBusinessError(TebraError):
    """Tebra answered with an error about this request: fail the task, leave the breaker alone."""

    outcome = "business"


def throttle_interval_ms(text: str) -> int | None:
    """The interval in Tebra's throttle message ("… over time interval 1000 milliseconds …"), if any."""
    match = _INTERVAL_RE.search(text)
    return int(match.group(1)) if match else None


def is_throttle_text(text: str | bytes | None) -> bool:
    """True when ``text`` holds Tebra's throttle phrase."""
    if not text:
        return False
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return THROTTLE_TEXT in text.lower()


def throttled(operation: str | None, text: str, how: str) -> TebraThrottled:
    """A :class:`TebraThrottled` for a throttle message met as ``how`` (ErrorResponse, HTTP 429, …)."""
    interval = throttle_interval_ms(text)
    stated = f" (interval {interval} ms)" if interval else ""
    message = f"{operation or 'Tebra'}: throttled by Tebra via {how}{stated}"
    return TebraThrottled(message, operation, interval)


def safe_tebra_text(text: str | None) -> str:
    """Tebra's message when it is a known PHI-free text, else a placeholder with its length."""
    if not text:
        return "no message"
    cleaned = " ".join(text.split())
    for known in SAFE_TEBRA_MESSAGES:
        if cleaned.lower().startswith(known.lower()):
            return known
    return f"message withheld ({len(text)} chars)"


def _text_of(value: Any) -> str:
    """Any fault detail (lxml element, string, bytes, None) as text, for searching only."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    try:
        from lxml import etree

        return str(etree.tostring(value, encoding="unicode"))
    except TypeError:
        return str(value)


def classify(
    exc: BaseException,
    operation: str | None = None,
    *,
    raw_body: bytes | None = None,
    status_code: int | None = None,
) -> TebraError:
    """Turn an exception raised by a zeep/requests call into a :class:`TebraError`.

    ``raw_body`` and ``status_code`` are the HTTP response as received (see ``client.last_response``):
    zeep's XMLParseError does not carry the body, and the throttle text may only be found there.
    """
    op = operation or "Tebra"
    if isinstance(exc, TebraError):
        return exc
    if isinstance(exc, zeep_exc.Fault):
        detail = _text_of(exc.detail)
        if is_throttle_text(exc.message) or is_throttle_text(detail) or is_throttle_text(raw_body):
            return throttled(operation, f"{exc.message} {detail} {_text_of(raw_body)}", "SOAP fault")
        if status_code == 429:
            return TebraThrottled(f"{op}: HTTP 429 without Tebra's throttle text", operation)
        code = (exc.code or "").split(":")[-1]
        if code in {"ActionNotSupported", "DeserializationFailed"}:
            # The service could not read our request: a client bug, which retrying does not fix.
            return TebraBusinessError(f"{op}: Tebra rejected the request ({code})", operation)
        label = code or "unknown fault"
        return TebraUpstreamError(f"{op}: SOAP fault {label}", operation, status_code)
    if isinstance(exc, zeep_exc.TransportError):
        status = exc.status_code or status_code
        body = exc.content if exc.content is not None else raw_body
        if is_throttle_text(body) or status == 429:
            return throttled(operation, _text_of(body), f"HTTP {status}")
        # exc.message may quote the whole body: never copy it.
        return TebraUpstreamError(f"{op}: HTTP {status} from Tebra", operation, status)
    if isinstance(exc, (zeep_exc.XMLParseError, zeep_exc.XMLSyntaxError, zeep_exc.ValidationError)):
        if is_throttle_text(raw_body) or is_throttle_text(getattr(exc, "content", None)):
            return throttled(operation, _text_of(raw_body), "an unparseable reply")
        return TebraUpstreamError(f"{op}: unreadable reply from Tebra ({type(exc).__name__})", operation)
    if isinstance(exc, requests.Timeout):
        return TebraUpstreamError(f"{op}: timed out ({type(exc).__name__})", operation)
    if isinstance(exc, requests.ConnectionError):
        return TebraUpstreamError(f"{op}: connection failed ({type(exc).__name__})", operation)
    if isinstance(exc, requests.RequestException):
        return TebraUpstreamError(f"{op}: HTTP error ({type(exc).__name__})", operation)
    if isinstance(exc, zeep_exc.Error):
        return TebraUpstreamError(f"{op}: zeep error ({type(exc).__name__})", operation)
    return TebraUpstreamError(f"{op}: unexpected {type(exc).__name__}", operation)
