"""The stored appointments of a range of clinic days (read from Redis; the API never calls Tebra)."""

from __future__ import annotations

from flask import Response, request

from app.api import bp
from app.audit import audited, record_on
from app.auth import require_scope
from app.errors import success
from app.schemas import days_between, range_schema
from app.scopes import READ_SCHEDULE
from app.services import services


@bp.get("/appointments")
@audited("appointments.read")
@require_scope(READ_SCHEDULE)
def list_appointments() -> Response:
    svc = services()
    args = range_schema(svc.clinic_tz, svc.settings.max_range_days).load(request.args)
    days = days_between(args["start"], args["end"])
    rows = svc.store.appointments_for(days, also=record_on)  # the audit record rides with the read
    response = success(rows, start=days[0], end=days[-1], count=len(rows))
    response.headers["Cache-Control"] = "no-store"  # patient names
    return response
