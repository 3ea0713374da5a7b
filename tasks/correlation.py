"""Carry the HTTP request id into the Celery tasks it enqueues, and both ids into the task's log lines.

The publisher (the API, or a task enqueueing another) adds a ``request_id`` message header from the context
variable; the worker reads it back from ``task.request`` before the task runs and sets the context variables
that tasks/logs.py puts into every line.
"""

from __future__ import annotations

from typing import Any

from celery.signals import before_task_publish, task_postrun, task_prerun

from tasks.logs import request_id_var, task_id_var

HEADER = "request_id"

_connected = False


def _add_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    request_id = request_id_var.get()
    if headers is not None and request_id and not headers.get(HEADER):
        headers[HEADER] = request_id


def _enter_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task_id is None:
        return
    request_id = getattr(task.request, HEADER, None) if task is not None else None
    task_id_var.set(task_id)
    request_id_var.set(request_id or None)


def _leave_task(**_: Any) -> None:
    # A pool process runs one task at a time: the next task's lines must not carry this one's ids.
    task_id_var.set(None)
    request_id_var.set(None)


def connect() -> None:
    """Connect the handlers once per process (the API and the worker both call it)."""
    global _connected
    if not _connected:
        before_task_publish.connect(_add_request_id, weak=False)
        task_prerun.connect(_enter_task, weak=False)
        task_postrun.connect(_leave_task, weak=False)
        _connected = True
