"""The stored appointments of a range of clinic days (read from Redis; the API never calls Tebra)."""

from __future__ import annotations

from flask import Response
from marshmallow import fields

from app.api import bp
from app.audit import record_on
from app.errors import success
from app.ratelimit import READ_COST
from app.route import Answer, load_query, route
from app.schemas import RangeSchema, days_between
from app.scopes import READ_SCHEDULE
from app.services import services


@route(
    bp,
    "GET",
    "/appointments",
    summary="Stored appointments of clinic days start..end (at most MAX_RANGE_DAYS days, 31 by default)",
    scope=READ_SCHEDULE,
    audit="appointments.read",
    cost=READ_COST,
    query=RangeSchema,
    answer=Answer(
        many=True,
        description="appointments ordered by start",
        extra={"count": fields.Integer(), "start": fields.Date(), "end": fields.Date()},
    ),
)
def list_appointments() -> Response:
    svc = services()
    args = load_query()
    days = days_between(args["start"], args["end"])
    rows = svc.store.appointments_for(days, also=record_on)  # the audit record rides with the read
    response = success(rows, start=days[0], end=days[-1], count=len(rows))
    response.headers["Cache-Control"] = "no-store"  # patient names
    return response
