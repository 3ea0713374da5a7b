"""The worker's Prometheus endpoint on WORKER_METRICS_PORT, and task metrics from Celery signals.

Prefork: tasks run in child processes, so every process writes its samples to files in one directory
(prometheus-client's multiprocess mode) and the HTTP server, started in the parent only, reads them all.
The directory is ``PROMETHEUS_MULTIPROC_DIR`` when set (compose), else a fresh one per worker; either way it
is emptied when the worker starts, so counts begin at zero with each worker, as Prometheus expects.
The Tebra call and throttle metrics come from the gateway's callbacks (tasks/runtime.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from celery.signals import (
    celeryd_init,
    task_failure,
    task_postrun,
    task_prerun,
    task_received,
    task_rejected,
    task_retry,
    task_revoked,
    task_success,
    worker_process_shutdown,
    worker_ready,
)

from config import Settings
from tasks import metrics

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"

_connected = False
_started: dict[str, float] = {}  # task id -> perf_counter at prerun (one task at a time per process)


def prepare_directory(**_: Any) -> None:
    """Before any instrument is built: choose and empty the samples directory (parent, before the fork)."""
    folder = os.environ.get(ENV) or tempfile.mkdtemp(prefix="clinic-relay-worker-metrics-")
    path = Path(folder)
    if path.exists():
        for stale in path.glob("*.db"):
            stale.unlink()
    path.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(path)
    # The celery command imports its plugins first, Flower's among them, and Flower imports prometheus-client:
    # its storage was chosen before this ran. Choose again (prometheus-client looks it up on its module).
    from prometheus_client import values

    values.ValueClass = values.get_value_class()


def start_server(sender: Any = None, **_: Any) -> None:
    """Serve every process's samples on WORKER_METRICS_PORT (0: off), from the parent."""
    settings: Settings = sender.app.conf.clinic_settings
    if not settings.worker_metrics_port:
        return
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    metrics.instruments()  # this process writes samples too (task_received)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    try:
        start_http_server(
            settings.worker_metrics_port, addr=settings.worker_metrics_address, registry=registry
        )
    except OSError as exc:  # a second worker on the same machine: the first one serves the directory
        log.warning("worker metrics port %s busy: %s", settings.worker_metrics_port, type(exc).__name__)
        return
    log.info("worker metrics on %s:%s", settings.worker_metrics_address, settings.worker_metrics_port)


def remove_directory(path: str) -> None:
    """Delete a samples directory this module created (tests)."""
    shutil.rmtree(path, ignore_errors=True)


def _name(sender: Any = None, task: Any = None, request: Any = None) -> str:
    found = getattr(task or sender, "name", None) or getattr(request, "task", None)
    return str(found or "unknown")


def _count(task_name: str, state: str) -> None:
    metrics.instruments().tasks.labels(task_name, state).inc()


def _finished(task_id: str | None, task_name: str, state: str) -> None:
    started = _started.pop(task_id or "", None)
    if started is not None:
        metrics.instruments().task_seconds.labels(task_name, state).observe(time.perf_counter() - started)


def _on_received(request: Any = None, **_: Any) -> None:
    _count(_name(request=request), "received")


def _on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    _started[task_id or ""] = time.perf_counter()
    _count(_name(task=task), "started")


def _on_success(sender: Any = None, **_: Any) -> None:
    task_id = getattr(getattr(sender, "request", None), "id", None)
    _count(_name(sender), "succeeded")
    _finished(task_id, _name(sender), "succeeded")


def _on_failure(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
    _count(_name(sender), "failed")
    _finished(task_id, _name(sender), "failed")


def _on_retry(sender: Any = None, request: Any = None, **_: Any) -> None:
    _count(_name(sender), "retried")
    _finished(getattr(request, "id", None), _name(sender), "retried")


def _on_postrun(task_id: str | None = None, **_: Any) -> None:
    _started.pop(task_id or "", None)  # a state without its own signal (ignored, rejected): no duration


def _on_rejected(message: Any = None, **_: Any) -> None:
    headers = getattr(message, "headers", None) or {}
    _count(str(headers.get("task", "unknown")), "rejected")


def _on_revoked(request: Any = None, **_: Any) -> None:
    _count(_name(request=request), "revoked")


def _mark_child_dead(pid: int | None = None, **_: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(os.getpid())


def connect() -> None:
    """Connect the handlers once per process."""
    global _connected
    if _connected:
        return
    celeryd_init.connect(prepare_directory, weak=False)
    worker_ready.connect(start_server, weak=False)
    task_received.connect(_on_received, weak=False)
    task_prerun.connect(_on_prerun, weak=False)
    task_success.connect(_on_success, weak=False)
    task_failure.connect(_on_failure, weak=False)
    task_retry.connect(_on_retry, weak=False)
    task_postrun.connect(_on_postrun, weak=False)
    task_rejected.connect(_on_rejected, weak=False)
    task_revoked.connect(_on_revoked, weak=False)
    worker_process_shutdown.connect(_mark_child_dead, weak=False)
    _connected = True
