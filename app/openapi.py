"""``GET /api/v1/openapi.json``: the OpenAPI 3.1 document of every endpoint this API serves.

Written by hand beside the routes (app/api/*.py, app/health.py, app/metrics.py) and the schemas they load
(app/schemas.py); tests/reliability/test_bad_input.py fuzzes the served API from it with schemathesis, so a
route or parameter that drifts from it shows up there. Like every path under /api it needs a bearer token
(``read:schedule``): the document is for the clinic's developers, not the public.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from app.auth import require_scope
from app.scopes import ALL_SCOPES, READ_SCHEDULE

bp = Blueprint("openapi", __name__, url_prefix="/api/v1")

DATE = {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$", "examples": ["2026-11-26"]}
ERROR_CODES = [
    "VALIDATION_ERROR",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "CONFLICT",
    "PAYLOAD_TOO_LARGE",
    "UNSUPPORTED_MEDIA_TYPE",
    "RATE_LIMIT",
    "INTERNAL",
    "UPSTREAM_ERROR",
    "CIRCUIT_OPEN",
    "SERVICE_UNAVAILABLE",
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _ok(description: str, data: dict[str, Any], **extra: dict[str, Any]) -> dict[str, Any]:
    """A success envelope whose ``data`` is ``data`` (plus top-level ``extra`` fields)."""
    envelope = {
        "type": "object",
        "required": ["success", "data", "timestamp"],
        "properties": {
            "success": {"const": True},
            "data": data,
            "timestamp": {"type": "string"},
            **extra,
        },
    }
    return {"description": description, **_json(envelope)}


def _errors(*statuses: int) -> dict[str, Any]:
    """Error answers: the envelope, whatever the status (401/429/503 can happen on every /api route)."""
    described = {
        400: "VALIDATION_ERROR: a parameter or the body is not valid",
        401: "UNAUTHORIZED: no valid bearer token",
        403: "FORBIDDEN: the token lacks the scope",
        404: "NOT_FOUND",
        409: "CONFLICT",
        413: "PAYLOAD_TOO_LARGE: bodies are limited to 64 KB",
        429: "RATE_LIMIT (with Retry-After)",
        502: "UPSTREAM_ERROR",
        503: "SERVICE_UNAVAILABLE or CIRCUIT_OPEN (with Retry-After): Redis, the broker or Tebra is away",
    }
    chosen = sorted({401, 429, 503, *statuses})
    return {str(code): {"description": described[code], **_json(_ref("Error"))} for code in chosen}


def _query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _action_op(summary: str, actions: list[str]) -> dict[str, Any]:
    """An ops POST whose body is ``{"action": one of actions}`` (ops:breaker); answers the new state."""
    body = {
        "type": "object",
        "required": ["action"],
        "additionalProperties": False,
        "properties": {"action": {"type": "string", "enum": actions}},
    }
    return _op(
        summary,
        "ops:breaker",
        {"200": _ok("the new state", OBJECT)},
        413,
        requestBody={"required": True, **_json(body)},
    )


def _op(summary: str, scope: str, responses: dict[str, Any], *statuses: int, **more: Any) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": [{"bearer": [scope]}],
        "responses": {**responses, **_errors(400, 403, *statuses)},
        **more,
    }


OBJECT = {"type": "object"}
ROWS = {"type": "array", "items": OBJECT}
SYNC_STATE = {
    "type": "string",
    "enum": ["queued", "running", "succeeded", "failed", "retrying", "deferred", "suspect_empty"],
}
FLOW_STATES = [
    "scheduled",
    "confirmed",
    "arrived",
    "appt-prep",
    "ready-for-md",
    "with-doctor",
    "seen-by-md",
    "completed",
    "cancelled",
    "no-show",
    "rescheduled",
]

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Clinic Relay API",
        "version": "1",
        "description": "The clinic's schedule from Tebra, kept in Redis; events over the /ws WebSocket "
        "(docs/realtime.md). Every answer is an envelope: {success, data | error, timestamp}.",
    },
    "servers": [{"url": "/"}],
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "Auth0 RS256 access token; scopes: " + ", ".join(ALL_SCOPES),
            }
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["success", "error", "timestamp"],
                "properties": {
                    "success": {"const": False},
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string", "enum": ERROR_CODES},
                            "message": {"type": "string"},
                            "details": {},
                        },
                    },
                    "timestamp": {"type": "string"},
                },
            },
            "SyncAccepted": {
                "type": "object",
                "required": ["task_id", "date", "status", "deduplicated"],
                "properties": {
                    "task_id": {"type": "string"},
                    "date": DATE,
                    "status": SYNC_STATE,
                    "deduplicated": {"type": "boolean"},
                    "mode": {"type": "string", "enum": ["full", "auto"]},
                },
            },
        },
    },
    "paths": {
        "/api/v1/providers": {
            "get": _op(
                "The practice's providers (cached 1 h; stale while Tebra is away)",
                READ_SCHEDULE,
                {"200": _ok("providers", ROWS, stale={"type": "boolean"})},
            )
        },
        "/api/v1/appointments": {
            "get": _op(
                "Stored appointments of clinic days start..end (at most 31 days)",
                READ_SCHEDULE,
                {"200": _ok("appointments ordered by start", ROWS, count={"type": "integer"})},
                parameters=[
                    _query("start", DATE, "first clinic day (YYYY-MM-DD)", required=True),
                    _query("end", DATE, "last clinic day, inclusive (default: start)"),
                ],
            )
        },
        "/api/v1/schedule/sync": {
            "post": _op(
                "Queue a sync of one clinic day (a sync of that day already queued or running is reused)",
                "sync:schedule",
                {
                    "202": _ok("accepted", _ref("SyncAccepted")),
                },
                parameters=[
                    _query("date", DATE, "clinic day, within 366 days of today (default today)"),
                    _query(
                        "mode",
                        {"type": "string", "enum": ["full", "incremental"]},
                        "full: read the whole day from Tebra (deletions too) whatever the last full read "
                        "was; incremental or none: the worker chooses",
                    ),
                ],
            )
        },
        "/api/v1/schedule/status/{date}": {
            "get": _op(
                "The last sync of one clinic day",
                READ_SCHEDULE,
                {"200": _ok("status", OBJECT)},
                404,
                parameters=[{"name": "date", "in": "path", "required": True, "schema": DATE}],
            )
        },
        "/api/v1/tasks/{task_id}": {
            "get": _op(
                "What is known of one task (state, date, counts; no PHI)",
                READ_SCHEDULE,
                {"200": _ok("task", OBJECT)},
                404,
                parameters=[
                    {
                        "name": "task_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9A-Za-z-]{20,40}$"},
                    }
                ],
            )
        },
        "/api/v1/patients": {
            "get": _op(
                "The day's patient-flow board",
                READ_SCHEDULE,
                {"200": _ok("patients", ROWS, count={"type": "integer"})},
                parameters=[_query("date", DATE, "clinic day (default today)")],
            )
        },
        "/api/v1/patients/{hpid}/status": {
            "patch": _op(
                "Move one patient along the flow",
                "write:patients",
                {"200": _ok("the change", OBJECT)},
                404,
                409,
                413,
                parameters=[
                    {
                        "name": "hpid",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9a-f]{24}$"},
                    },
                    _query("date", DATE, "clinic day (default today)"),
                    {
                        "name": "If-Match",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": 'the version seen, as "3"',
                    },
                ],
                requestBody={
                    "required": True,
                    **_json(
                        {
                            "type": "object",
                            "required": ["status"],
                            "additionalProperties": False,
                            "properties": {
                                "status": {"type": "string", "enum": FLOW_STATES},
                                "room": {"type": ["string", "null"], "maxLength": 32},
                                "version": {"type": ["integer", "null"], "minimum": 1},
                            },
                        }
                    ),
                },
            )
        },
        "/api/v1/ops/breaker": {
            "get": _op("The Tebra breaker's state", "ops:breaker", {"200": _ok("breaker", OBJECT)}),
            "post": _action_op(
                "Hold the Tebra breaker open until cleared, or clear it", ["force_open", "clear"]
            ),
        },
        "/api/v1/ops/tebra": {
            "get": _op(
                "The Tebra account: the credentials latch, the live throttles, the last check",
                "ops:breaker",
                {"200": _ok("the account's state", OBJECT)},
            ),
            "post": _action_op(
                "Resume Tebra calls after fixing refused credentials, or run the Tebra check on a worker",
                ["resume", "check"],
            ),
        },
        "/api/v1/openapi.json": {
            "get": _op(
                "This document", READ_SCHEDULE, {"200": {"description": "OpenAPI 3.1", **_json(OBJECT)}}
            )
        },
        "/health": {
            "get": {
                "summary": "The process is up",
                "security": [],
                "responses": {"200": {"description": "ok", **_json(OBJECT)}},
            }
        },
        "/ready": {
            "get": {
                "summary": "Redis, the broker, a live worker and the audit writer answer",
                "security": [],
                "responses": {
                    "200": {"description": "ready", **_json(OBJECT)},
                    "503": {"description": "a dependency is missing; checks say which", **_json(OBJECT)},
                },
            }
        },
    },
}


@bp.get("/openapi.json")
@require_scope(READ_SCHEDULE)
def openapi_document() -> Response:
    return jsonify(DOCUMENT)
