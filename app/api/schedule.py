"""Schedule syncs: request one (deduplicated per date), read the last one's status."""

from __future__ import annotations

import logging

from flask import Response, request
from kombu.exceptions import OperationalError
from ulid import ULID

from app.api import bp
from app.audit import audited, note
from app.auth import READ_SCHEDULE, SYNC_SCHEDULE, require_scope
from app.errors import ApiError, success
from app.schemas import DateSchema, SyncRequestSchema
from app.services import services
from tasks import events, sync_status
from tasks.celery_factory import SYNC_QUEUE

log = logging.getLogger(__name__)

SYNC_TASK = "schedule.sync"  # by name: the API never imports task bodies (they talk to Tebra)


@bp.post("/schedule/sync")
@audited("schedule.sync_requested")
@require_scope(SYNC_SCHEDULE)
def request_sync() -> Response:
    """Queue a sync of one clinic day; a sync of that day already queued or running is reused."""
    svc = services()
    args = SyncRequestSchema(svc.clinic_tz).load(request.args)
    date = args["date"].isoformat()
    task_id, deduplicated = sync_status.claim(svc.redis, date, str(ULID()), svc.settings.sync_lock_ttl_s)
    if not deduplicated:
        sync_status.record(
            svc.redis,
            date,
            task_id,
            svc.settings.retention_days * 86400,
            state=sync_status.QUEUED,
            requested_at=events.utc_now_iso(),
            started_at="",
            finished_at="",
            duration_ms="",
            counts="",
            error="",
            attempt=0,
        )
        try:
            svc.celery.send_task(SYNC_TASK, args=[date], task_id=task_id, queue=SYNC_QUEUE)
        except OperationalError as exc:
            sync_status.release(svc.redis, date, task_id)
            sync_status.record(
                svc.redis,
                date,
                task_id,
                svc.settings.retention_days * 86400,
                state=sync_status.FAILED,
                error="BROKER_UNAVAILABLE",
            )
            log.error("broker unavailable on enqueue: %s", type(exc).__name__)
            raise ApiError(
                "SERVICE_UNAVAILABLE",
                "The task queue is unavailable; try again shortly.",
                headers={"Retry-After": "5"},
            ) from None
    note(date=date, task_id=task_id, deduplicated=deduplicated)
    status = sync_status.read_status(svc.redis, date) or {}
    body = {
        "task_id": task_id,
        "date": date,
        "status": status.get("state", sync_status.QUEUED),
        "deduplicated": deduplicated,
    }
    response = success(body, status=202)
    response.headers["Location"] = f"/api/v1/tasks/{task_id}"
    return response


@bp.get("/schedule/status/<date>")
@require_scope(READ_SCHEDULE)
def sync_status_of(date: str) -> Response:
    """The last sync of one clinic day."""
    svc = services()
    day = DateSchema(svc.clinic_tz).load({"date": date})["date"].isoformat()
    status = sync_status.read_status(svc.redis, day)
    if status is None:
        raise ApiError("NOT_FOUND", f"No sync has been requested for {day}.")
    return success({"date": day, **status})
