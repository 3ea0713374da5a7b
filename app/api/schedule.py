"""Schedule syncs: request one (deduplicated per date), read the last one's status."""

from __future__ import annotations

import logging

from flask import Response
from kombu.exceptions import OperationalError

from app.api import bp
from app.api.answers import SyncAcceptedSchema, SyncStatusSchema
from app.audit import note
from app.errors import ApiError, success
from app.ratelimit import READ_COST, SYNC_COST
from app.route import Answer, load_path, load_query, route
from app.schemas import DateSchema, SyncRequestSchema
from app.scopes import READ_SCHEDULE, SYNC_SCHEDULE
from app.services import services
from tasks.sync import status as sync_status
from tasks.sync.lifecycle import QUEUED
from tasks.sync.request import request_sync as queue_sync

log = logging.getLogger(__name__)


@route(
    bp,
    "POST",
    "/schedule/sync",
    summary="Queue a sync of one clinic day (a sync of that day already queued or running is reused)",
    scope=SYNC_SCHEDULE,
    audit="schedule.sync_requested",
    kept=True,
    cost=SYNC_COST,
    query=SyncRequestSchema,
    answer=Answer(SyncAcceptedSchema, status=202, description="accepted"),
)
def request_sync() -> Response:
    """Queue a sync of one clinic day; a sync of that day already queued or running is reused."""
    svc = services()
    args = load_query()
    date = args["date"].isoformat()
    full = args.get("mode") == "full"
    try:
        sent = queue_sync(svc.redis, svc.celery, svc.settings, date, requested_by="api", full=full)
    except OperationalError as exc:
        log.error("broker unavailable on enqueue: %s", type(exc).__name__)
        raise ApiError(
            "SERVICE_UNAVAILABLE",
            "The task queue is unavailable; try again shortly.",
            headers={"Retry-After": "5"},
        ) from None
    task_id, deduplicated = sent.task_id, sent.deduplicated
    note(date=date, task_id=task_id, deduplicated=deduplicated, mode=args.get("mode") or "")
    status = sync_status.read_status(svc.redis, date) or {}
    body = {
        "task_id": task_id,
        "date": date,
        "status": status.get("state", QUEUED),
        "deduplicated": deduplicated,
        "mode": "full" if full else "auto",
    }
    response = success(body, status=202)
    response.headers["Location"] = f"/api/v1/tasks/{task_id}"
    return response


@route(
    bp,
    "GET",
    "/schedule/status/<date>",
    summary="The last sync of one clinic day",
    scope=READ_SCHEDULE,
    cost=READ_COST,
    path=DateSchema,
    answer=Answer(SyncStatusSchema, description="status"),
    errors=(404,),
)
def sync_status_of(date: str) -> Response:
    """The last sync of one clinic day."""
    svc = services()
    day = load_path(date=date)["date"].isoformat()
    status = sync_status.read_status(svc.redis, day)
    if status is None:
        raise ApiError("NOT_FOUND", f"No sync has been requested for {day}.")
    return success({"date": day, **status})
