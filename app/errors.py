"""Every error is JSON in one envelope:
``{"success": false, "error": {code, message, details}, "timestamp"}``.

Codes and statuses are the contract's (docs/architecture.md, "The contract: Redis names, events, errors"). No
stack trace and no PHI ever reaches a client: unexpected
exceptions are logged by class and answered as ``INTERNAL``.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response, jsonify
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from tasks.audit import AuditBacklog, is_backlog
from tasks.events import utc_now_iso

log = logging.getLogger(__name__)

STATUS_OF = {
    "VALIDATION_ERROR": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "CONFLICT": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "RATE_LIMIT": 429,
    "INTERNAL": 500,
    "UPSTREAM_ERROR": 502,
    "CIRCUIT_OPEN": 503,
    "SERVICE_UNAVAILABLE": 503,
}

_CODE_OF_HTTP = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    414: "VALIDATION_ERROR",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMIT",
    431: "VALIDATION_ERROR",
}


class ApiError(Exception):
    """An error the API answers on purpose."""

    def __init__(
        self, code: str, message: str, *, details: Any = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.status = STATUS_OF[code]
        self.headers = headers or {}


def error_response(
    code: str,
    message: str,
    details: Any = None,
    *,
    status: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The error envelope as a Flask response."""
    body: dict[str, Any] = {
        "success": False,
        "error": {"code": code, "message": message},
        "timestamp": utc_now_iso(),
    }
    if details is not None:
        body["error"]["details"] = details
    response = jsonify(body)
    response.status_code = status or STATUS_OF.get(code, 500)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def success(data: Any, status: int = 200, **extra: Any) -> Response:
    """The success envelope: ``{"success": true, "data": …, "timestamp": …}`` (+ extra top-level fields)."""
    response = jsonify({"success": True, "data": data, **extra, "timestamp": utc_now_iso()})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    """Make every failure, expected or not, answer in the envelope."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.code, exc.message, exc.details, headers=exc.headers)

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError) -> Response:
        return error_response("VALIDATION_ERROR", "The request is not valid.", exc.normalized_messages())

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = _CODE_OF_HTTP.get(status, "INTERNAL" if status >= 500 else "VALIDATION_ERROR")
        headers = (
            {"Allow": exc.response.headers["Allow"]}
            if exc.response and "Allow" in exc.response.headers
            else {}
        )
        if status == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            headers["Allow"] = ", ".join(exc.valid_methods)
        return error_response(code, exc.description or exc.name, status=status, headers=headers)

    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    def _redis_down(exc: Exception) -> Response:
        log.error("redis unavailable: %s", type(exc).__name__)
        return error_response(
            "SERVICE_UNAVAILABLE",
            "A backing service is unavailable; try again shortly.",
            headers={"Retry-After": "5"},
        )

    @app.errorhandler(AuditBacklog)
    @app.errorhandler(redis.exceptions.ResponseError)
    def _audit_behind(exc: Exception) -> Response:
        # A PHI read or a change nobody could account for does not happen: the audit writer is behind.
        if not isinstance(exc, AuditBacklog) and not is_backlog(exc):
            return _unexpected(exc)
        log.error("audit stream full: the audit writer is behind; refusing audited requests")
        return error_response(
            "SERVICE_UNAVAILABLE",
            "The audit trail cannot take this request now; try again shortly.",
            headers={"Retry-After": "5"},
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error: %s", type(exc).__name__)
        return error_response("INTERNAL", "Internal error.")
