"""What is known of one task: its action, date, state and counts (no PHI)."""

from __future__ import annotations

from flask import Response

from app.api import bp
from app.errors import ApiError, success
from app.ratelimit import READ_COST
from app.route import Answer, load_path, route
from app.schemas import TaskIdSchema
from app.scopes import READ_SCHEDULE
from app.services import services
from tasks.sync import status


@route(
    bp,
    "GET",
    "/tasks/<task_id>",
    summary="What is known of one task (state, date, counts; no PHI)",
    scope=READ_SCHEDULE,
    cost=READ_COST,
    path=TaskIdSchema,
    answer=Answer(description="task"),
    errors=(404,),
)
def task_of(task_id: str) -> Response:
    load_path(task_id=task_id)
    record = status.read_task(services().redis, task_id)
    if record is None:
        raise ApiError("NOT_FOUND", "No such task.")
    return success(record)
