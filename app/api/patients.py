"""The day's patient-flow board and the clinic's status changes (docs/board.md).

The change itself (check, write, event) is one Lua script in tasks/patients/board.py: this module validates,
calls it once and turns its refusals into 404 / 409.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Response, current_app, request
from marshmallow import fields

from app.api import bp
from app.api.answers import StatusChangedSchema
from app.audit import note, record_on
from app.errors import ApiError, success
from app.ratelimit import READ_COST, WRITE_COST
from app.route import Answer, load_body, load_path, load_query, route
from app.schemas import DayQuerySchema, HpidSchema, IfMatchSchema, StatusChangeSchema
from app.scopes import READ_SCHEDULE, WRITE_PATIENTS
from app.services import services
from tasks.patients.board import PatientFlow, PatientNotFound, StatusConflict

EXTENSION_KEY = "patient_flow"
_IF_MATCH = re.compile(r'^\s*(?:W/)?"?(\d{1,12})"?\s*$')


def patient_flow() -> PatientFlow:
    """The app's :class:`PatientFlow`, built on first use."""
    found = current_app.extensions.get(EXTENSION_KEY)
    if found is None:
        svc = services()
        found = PatientFlow(svc.redis, svc.cipher, sender="api", maxlen=svc.settings.stream_maxlen)
        current_app.extensions[EXTENSION_KEY] = found
    return found


@route(
    bp,
    "GET",
    "/patients",
    summary="The day's patient-flow board",
    scope=READ_SCHEDULE,
    audit="patients.read",
    cost=READ_COST,
    query=DayQuerySchema,
    answer=Answer(
        many=True,
        description="patients",
        extra={"date": fields.Date(), "count": fields.Integer(), "last_event_id": fields.String()},
    ),
)
def list_patients() -> Response:
    """The day's board: every patient with their status, times and wait (names and dates of birth: PHI)."""
    date = load_query()["date"].isoformat()
    board = patient_flow().board(date, also=record_on)  # the audit record rides with the read
    # last_event_id: subscribe to /ws with since=<it> to get every change after this read, and none before.
    response = success(board.rows, date=date, count=len(board.rows), last_event_id=board.last_event_id)
    response.headers["Cache-Control"] = "no-store"
    return response


@route(
    bp,
    "PATCH",
    "/patients/<hpid>/status",
    summary="Move one patient along the flow",
    scope=WRITE_PATIENTS,
    audit="patients.status_change",
    kept=True,
    cost=WRITE_COST,
    path=HpidSchema,
    query=DayQuerySchema,
    headers=IfMatchSchema,
    body=StatusChangeSchema,
    answer=Answer(StatusChangedSchema, description="the change"),
    errors=(404, 409, 413),
)
def change_status(hpid: str) -> Response:
    """Move one patient along the flow; refused with 409 when the state machine or the version says no."""
    load_path(hpid=hpid)
    date = load_query()["date"].isoformat()
    body = load_body(_json_body())
    expected = _expected_version(body.get("version"))
    try:
        changed = patient_flow().change_status(
            date,
            hpid,
            body["status"],
            room=(body["room"] or "") if "room" in body else None,
            expected_version=expected,
        )
    except PatientNotFound:
        raise ApiError("NOT_FOUND", f"No patient {hpid} on {date}.") from None
    except StatusConflict as exc:
        raise _conflict(exc) from None
    note(status=changed.status, version=changed.version)
    data = {
        "hpid": changed.hpid,
        "date": changed.date,
        "status": changed.status,
        "previous": changed.previous,
        "version": changed.version,
        "room": changed.room,
        "event_id": changed.event_id,
    }
    response = success(data)
    response.headers["ETag"] = f'"{changed.version}"'
    return response


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError("VALIDATION_ERROR", "Send a JSON object: {status, room?, version?}.")
    return body


def _expected_version(in_body: int | None) -> int | None:
    """The version the client saw: the body's ``version`` or ``If-Match: "<version>"`` (equal if both)."""
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return in_body
    match = _IF_MATCH.match(header)
    if match is None:
        raise ApiError(
            "VALIDATION_ERROR", 'If-Match must be a version: "3".', details={"If-Match": header[:40]}
        )
    from_header = int(match.group(1))
    if in_body is not None and in_body != from_header:
        raise ApiError("VALIDATION_ERROR", "The body's version and If-Match disagree.")
    return from_header


def _conflict(exc: StatusConflict) -> ApiError:
    details = {
        "reason": exc.reason,
        "status": exc.current,
        "version": exc.version,
        "requested": exc.requested,
        "allowed": exc.allowed,
    }
    if exc.reason == "stale_version":
        message = (
            f"The patient changed since the version you sent (now version {exc.version}, {exc.current})."
        )
    else:
        allowed = ", ".join(exc.allowed) or "none (a final state)"
        message = f"A patient in {exc.current} cannot move to {exc.requested}; allowed next: {allowed}."
    return ApiError("CONFLICT", message, details=details, headers={"ETag": f'"{exc.version}"'})
