"""What is known of one task: its action, date, state and counts (no PHI)."""

from __future__ import annotations

from flask import Response

from app.api import bp
from app.auth import require_scope
from app.errors import ApiError, success
from app.schemas import TaskIdSchema
from app.scopes import READ_SCHEDULE
from app.services import services
from tasks import sync_status


@bp.get("/tasks/<task_id>")
@require_scope(READ_SCHEDULE)
def task_of(task_id: str) -> Response:
    TaskIdSchema().load({"task_id": task_id})
    record = sync_status.read_task(services().redis, task_id)
    if record is None:
        raise ApiError("NOT_FOUND", "No such task.")
    return success(record)
