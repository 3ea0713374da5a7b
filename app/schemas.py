"""marshmallow schemas for every input the API accepts. Unknown fields are refused, not ignored."""

from __future__ import annotations

import functools
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

from tasks.patients import flow

# How far from today a clinic day may be: wide enough for any real schedule, narrow enough that a typo
# (2206 for 2026) is refused instead of sent to Tebra.
MAX_DAYS_FROM_TODAY = 366


def clinic_today(tz: ZoneInfo) -> date:
    """Today in the clinic's time zone (not the server's)."""
    return datetime.now(tz).date()


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class ClinicDate(fields.Date):
    """A YYYY-MM-DD clinic day within a year of today."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> date:
        if not isinstance(value, str) or len(value) != 10:
            raise ValidationError("Use a date as YYYY-MM-DD.")
        day: date = super()._deserialize(value, attr, data, **kwargs)
        tz = getattr(self.parent, "context_tz", None) or ZoneInfo("UTC")
        if abs((day - clinic_today(tz)).days) > MAX_DAYS_FROM_TODAY:
            raise ValidationError(f"The date must be within {MAX_DAYS_FROM_TODAY} days of today.")
        return day


class _ClinicSchema(_Strict):
    def __init__(self, tz: ZoneInfo, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.context_tz = tz


class SyncRequestSchema(_ClinicSchema):
    """``POST /schedule/sync?date=&mode=``: the clinic day, default today; ``mode=full`` reads the whole day
    from Tebra whatever the last full read was, ``incremental`` (or none) lets the worker choose."""

    date = ClinicDate(
        load_default=None,
        metadata={"description": f"clinic day, within {MAX_DAYS_FROM_TODAY} days of today (default today)"},
    )
    mode = fields.String(
        load_default=None,
        validate=validate.OneOf(["full", "incremental"]),
        metadata={
            "description": "full: read the whole day from Tebra (deletions too) whatever the last full read "
            "was; incremental or none: the worker chooses"
        },
    )

    @post_load
    def _default_today(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if data.get("date") is None:
            data["date"] = clinic_today(self.context_tz)
        return data


class DateSchema(_ClinicSchema):
    """A required clinic day."""

    date = ClinicDate(required=True)


class RangeSchema(_ClinicSchema):
    """``GET /appointments?start=&end=``: inclusive clinic days, at most ``max_days``."""

    start = ClinicDate(required=True, metadata={"description": "first clinic day (YYYY-MM-DD)"})
    end = ClinicDate(
        load_default=None, metadata={"description": "last clinic day, inclusive (default: start)"}
    )

    def __init__(self, tz: ZoneInfo, max_days: int, **kwargs: Any) -> None:
        super().__init__(tz, **kwargs)
        self.max_days = max_days

    @post_load
    def _default_end(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if data.get("end") is None:
            data["end"] = data["start"]
        return data

    @validates_schema
    def _check_range(self, data: dict[str, Any], **_: Any) -> None:
        start, end = data.get("start"), data.get("end")
        if start and end:
            if end < start:
                raise ValidationError("end must not be before start.", "end")
            if (end - start).days + 1 > self.max_days:
                raise ValidationError(f"The range may span at most {self.max_days} days.", "end")


@functools.cache
def instance_of(schema: type[Schema], tz: ZoneInfo, max_days: int) -> Schema:
    """``schema`` as the API loads with it for a clinic in ``tz`` whose ranges span at most ``max_days``: one
    shared instance per class and setting (loading keeps no state on the instance; building one costs more
    than the load itself on the hottest read)."""
    if issubclass(schema, RangeSchema):
        return schema(tz, max_days)
    if issubclass(schema, _ClinicSchema):
        return schema(tz)
    return schema()


def days_between(start: date, end: date) -> list[str]:
    """Every day from start to end inclusive, as YYYY-MM-DD."""
    return [(start + timedelta(days=offset)).isoformat() for offset in range((end - start).days + 1)]


class TaskIdSchema(_Strict):
    """A task id as this API issues them (a ULID) or Celery's UUIDs."""

    task_id = fields.String(
        required=True, validate=validate.Regexp(r"^[0-9A-Za-z-]{20,40}$", error="Not a task id.")
    )


class DayQuerySchema(SyncRequestSchema):
    """``?date=`` on the board's reads and writes: a clinic day, default today."""


class IfMatchSchema(Schema):
    """``If-Match: "<version>"`` on a status change: the version the client saw (the view parses it)."""

    if_match = fields.String(data_key="If-Match", metadata={"description": 'the version seen, as "3"'})


class HpidSchema(_Strict):
    """A patient as the API names them: the keyed HMAC of the Tebra id (24 lower-case hex characters)."""

    hpid = fields.String(
        required=True, validate=validate.Regexp(r"^[0-9a-f]{24}$", error="Not a patient id.")
    )


class StatusChangeSchema(_Strict):
    """``PATCH /patients/{hpid}/status``: the state to move to, optionally a room and the version seen."""

    status = fields.String(required=True, validate=validate.OneOf(flow.STATES))
    # Absent: the room stays; "" or null: cleared. Printable text only (it is shown on every board).
    room = fields.String(
        allow_none=True,
        validate=[
            validate.Length(max=32),
            validate.Regexp(r"^[^\x00-\x1f\x7f]*$", error="Printable text only."),
        ],
    )
    version = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=1))


class BreakerActionSchema(_Strict):
    """``POST /ops/breaker``: hold the Tebra breaker open until cleared, or clear it."""

    action = fields.String(required=True, validate=validate.OneOf(("force_open", "clear")))


class TebraActionSchema(_Strict):
    """``POST /ops/tebra``: resume Tebra calls after fixing refused credentials, or run the Tebra check."""

    action = fields.String(required=True, validate=validate.OneOf(("resume", "check")))
