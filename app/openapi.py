"""``GET /api/v1/openapi.json``: the OpenAPI 3.1 document of every endpoint this API serves, generated.

Every route under /api/v1 declares itself once (app/route.py); this module turns the app's routes and their
declarations into the document with apispec and its marshmallow plugin: parameters and bodies from the input
schemas (app/schemas.py), answers from app/api/answers.py inside the success envelope, the error envelope with
the codes of app/errors.py ``STATUS_OF``. Only /health and /ready, which are not /api routes, are written out
here. tests/reliability/test_bad_input.py fuzzes the served API from this document with schemathesis. Like
every path under /api it needs a bearer token (``read:schedule``): the document is for the clinic's
developers, not the public.
"""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response, current_app, jsonify
from marshmallow import Schema, fields, validate

from app.errors import STATUS_OF
from app.ratelimit import READ_COST
from app.route import Answer, Declaration, declaration_of, route
from app.schemas import ClinicDate, instance_of
from app.scopes import ALL_SCOPES, READ_SCHEDULE
from app.services import services

bp = Blueprint("openapi", __name__, url_prefix="/api/v1")

EXTENSION_KEY = "openapi_document"
DESCRIPTION = (
    "The clinic's schedule from Tebra, kept in Redis; events over the /ws WebSocket (docs/realtime.md). "
    "Every answer is an envelope: {success, data | error, timestamp}."
)
ERROR_STATUSES = {
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
_FLASK_PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")


class ErrorBodySchema(Schema):
    code = fields.String(required=True, validate=validate.OneOf(list(STATUS_OF)))
    message = fields.String(required=True)
    details = fields.Raw()


class ErrorSchema(Schema):
    """The error envelope (app/errors.py), whatever the status."""

    success = fields.Constant(False, required=True)
    error = fields.Nested(ErrorBodySchema, required=True)
    timestamp = fields.String(required=True)


@route(
    bp,
    "GET",
    "/openapi.json",
    summary="This document",
    scope=READ_SCHEDULE,
    cost=READ_COST,
    answer=Answer(envelope=False, description="OpenAPI 3.1"),
)
def openapi_document() -> Response:
    found = current_app.extensions.get(EXTENSION_KEY)
    if found is None:  # built on first use: the routes are all registered by then
        found = current_app.extensions[EXTENSION_KEY] = build_document(current_app)
    return jsonify(found)


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of ``app``: every declared route, then the public probes."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="Clinic Relay API",
        version="1",
        openapi_version="3.1.0",
        plugins=[plugin],
        info={"description": DESCRIPTION},
        servers=[{"url": "/"}],
    )
    assert plugin.converter is not None  # set once the plugin is on a spec
    plugin.converter.add_attribute_function(_clinic_day_and_constants)
    spec.components.security_scheme(
        "bearer",
        {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "Auth0 RS256 access token; scopes: " + ", ".join(ALL_SCOPES),
        },
    )
    spec.components.schema("Error", schema=ErrorSchema)
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        declared = declaration_of(app.view_functions.get(rule.endpoint))
        if declared is not None:
            path = _FLASK_PARAMETER.sub(r"{\1}", rule.rule)
            operation = _operation(declared, plugin)
            spec.path(path=path, operations={declared.method.lower(): operation})
    for path, operations in PROBES.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                _never_null(parameter["schema"])
    return document


def _operation(declared: Declaration, plugin: MarshmallowPlugin) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": declared.summary,
        "security": [{"bearer": [declared.scope]}],
        "responses": {
            str(declared.answer.status): _answer(declared.answer, plugin),
            **{str(status): _error(status) for status in declared.statuses},
        },
    }
    where = {"path": declared.path, "query": declared.query, "header": declared.headers}
    parameters = [{"in": place, "schema": _schema(schema)} for place, schema in where.items() if schema]
    if parameters:
        operation["parameters"] = parameters
    if declared.body is not None:
        operation["requestBody"] = {"required": True, **_json(_schema(declared.body))}
    return operation


def _schema(schema: type[Schema]) -> Schema:
    svc = services()
    return instance_of(schema, svc.clinic_tz, svc.settings.max_range_days)


def _answer(answer: Answer, plugin: MarshmallowPlugin) -> dict[str, Any]:
    data: Any = _schema(answer.schema) if answer.schema is not None else {"type": "object"}
    if answer.many:
        data = {"type": "array", "items": data}
    if not answer.envelope:
        return {"description": answer.description, **_json(data)}
    assert plugin.converter is not None  # set once the plugin is on a spec
    extra = {name: plugin.converter.field2property(field) for name, field in answer.extra.items()}
    envelope = {
        "type": "object",
        "required": ["success", "data", "timestamp"],
        "properties": {"success": {"const": True}, "data": data, "timestamp": {"type": "string"}, **extra},
    }
    return {"description": answer.description, **_json(envelope)}


def _error(status: int) -> dict[str, Any]:
    return {"description": ERROR_STATUSES[status], **_json({"$ref": "#/components/schemas/Error"})}


def _never_null(schema: dict[str, Any]) -> None:
    """A parameter is absent or a string, never null: marshmallow's ``load_default=None`` is no JSON null."""
    if isinstance(schema.get("type"), list):
        schema["type"] = next(kind for kind in schema["type"] if kind != "null")
    if "enum" in schema:
        schema["enum"] = [value for value in schema["enum"] if value is not None]
    if "default" in schema and schema["default"] is None:
        del schema["default"]


def _json(schema: Any) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _clinic_day_and_constants(self: Any, field: fields.Field, **_: Any) -> dict[str, Any]:
    """What marshmallow's own types do not say: a clinic day is YYYY-MM-DD; a constant is ``const``."""
    if isinstance(field, ClinicDate):
        return {"pattern": r"^\d{4}-\d{2}-\d{2}$", "examples": ["2026-11-26"]}
    if isinstance(field, fields.Constant):
        return {"const": field.constant}
    return {}


# The public probes (app/health.py): no token, and answers of their own shape rather than the envelope.
_OBJECT = _json({"type": "object"})
PROBES: dict[str, dict[str, Any]] = {
    "/health": {
        "get": {
            "summary": "The process is up",
            "security": [],
            "responses": {"200": {"description": "ok", **_OBJECT}},
        }
    },
    "/ready": {
        "get": {
            "summary": "Redis, the broker, a live worker and the audit writer answer",
            "security": [],
            "responses": {
                "200": {"description": "ready", **_OBJECT},
                "503": {"description": "a dependency is missing; checks say which", **_OBJECT},
            },
        }
    },
}
