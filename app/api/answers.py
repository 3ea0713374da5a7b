"""marshmallow schemas of what the API answers, for the OpenAPI document (app/openapi.py).

The views build their answers as dicts; these say what is in them. Their enums come from the code's own
tables (the flow's states, the sync states), never from copies.
"""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields, validate

from tasks.patients import flow
from tasks.sync import lifecycle

# Every state ``sync:status:{date}`` and ``task:{id}`` can hold (tasks/sync/lifecycle.py, their only writer).
SYNC_STATES = (
    lifecycle.QUEUED,
    lifecycle.RUNNING,
    lifecycle.SUCCEEDED,
    lifecycle.FAILED,
    lifecycle.RETRYING,
    lifecycle.DEFERRED,
    lifecycle.SUSPECT_EMPTY,
)


class _Answer(Schema):
    class Meta:
        unknown = INCLUDE  # an answer may carry more than its schema names (the document says so)


class SyncAcceptedSchema(_Answer):
    """``POST /schedule/sync``: the task that syncs the day (a sync already queued or running is reused)."""

    task_id = fields.String(required=True)
    date = fields.Date(required=True)
    status = fields.String(required=True, validate=validate.OneOf(SYNC_STATES))
    deduplicated = fields.Boolean(required=True)
    mode = fields.String(validate=validate.OneOf(("full", "auto")))


class SyncStatusSchema(_Answer):
    """The last sync of one clinic day (``sync:status:{date}``): state, times, attempt, counts, error code."""

    date = fields.Date(required=True)
    task_id = fields.String()
    state = fields.String(validate=validate.OneOf(SYNC_STATES))


class StatusChangedSchema(_Answer):
    """``PATCH /patients/{hpid}/status``: the change as made; ``event_id`` is its event's stream id."""

    hpid = fields.String(required=True)
    date = fields.Date(required=True)
    status = fields.String(required=True, validate=validate.OneOf(flow.STATES))
    previous = fields.String(required=True)
    version = fields.Integer(required=True)
    room = fields.String(required=True)
    event_id = fields.String(required=True)
