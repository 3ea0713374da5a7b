"""What an operator sees of one real sync: Flower's REST API, the worker's metrics, JSON logs joined by ids.

Flower runs as `make flower` runs it (workers/flowerconfig.py, basic auth from settings, loopback) on a
free port against the test broker; the sync goes through the API under gunicorn to the prefork worker and
the simulator over HTTP.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from config import load_settings
from tasks import names
from tasks.celery_factory import create_celery
from tests.support.processes import BIN, free_port, spawn, stop, wait_until

FLOWER_AUTH = ("ops-test", "ops-test-password")


@pytest.fixture(scope="module")
def flower(stack_env: dict[str, str], logs_dir: Path, worker: Any) -> Iterator[str]:
    """Flower on a free loopback port with basic auth; yields its base URL."""
    port = free_port()
    log = logs_dir / "flower.log"
    env = {
        **stack_env,
        "FLOWER_PORT": str(port),
        "FLOWER_USER": FLOWER_AUTH[0],
        "FLOWER_PASSWORD": FLOWER_AUTH[1],
    }
    proc: subprocess.Popen[bytes] = spawn(
        [str(BIN / "celery"), "-A", "workers.celery_app", "flower", "--conf=workers/flowerconfig.py"],
        env,
        log,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(f"{base}/healthcheck", timeout=1).ok, 30, "flower", proc, log)
    _wait_for_flower_events(base, load_settings(stack_env))
    yield base
    stop(proc)


def _wait_for_flower_events(base: str, settings: Any) -> None:
    """/healthcheck answers before Flower's event receiver is on the broker: a task sent in between shows
    up without its name. Send no-op tasks until one is seen whole."""
    celery = create_celery(settings)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        task_id = celery.send_task(names.NOOP, args=[1]).id
        for _ in range(20):
            response = requests.get(f"{base}/api/task/info/{task_id}", auth=FLOWER_AUTH, timeout=5)
            if response.ok and response.json().get("name") == names.NOOP:
                return
            time.sleep(0.1)
    raise AssertionError("Flower never saw a task's events")


def clinic_date(offset_days: int) -> str:
    return (datetime.now(ZoneInfo("America/Chicago")).date() + timedelta(days=offset_days)).isoformat()


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what} not seen within {timeout}s (last: {last})")


def patient_names(simulator: Any, date: str) -> list[str]:
    names = []
    for appointment in simulator.appointments(date):
        for key, value in appointment.items():
            if "name" in key and "patient" in key and value:
                names.append(str(value))
    return names


def test_flower_shows_the_finished_sync_without_phi(
    flower: str,
    worker: Any,
    api_server: str,
    simulator: Any,
    auth_headers: dict[str, str],
    settings: Any,
    logs_dir: Path,
) -> None:
    assert requests.get(f"{flower}/api/tasks", timeout=5).status_code == 401, "Flower's API needs basic auth"
    date = next(d for d in map(clinic_date, range(3, 10)) if simulator.appointments(d))  # a clinic day
    patients = patient_names(simulator, date)
    assert patients, "the simulator's appointments name their patients"
    request_id = f"ops-test-{time.monotonic_ns()}"
    accepted = requests.post(
        f"{api_server}/api/v1/schedule/sync",
        params={"date": date},
        headers={**auth_headers, "X-Request-ID": request_id},
        timeout=5,
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["X-Request-ID"] == request_id
    task_id = accepted.json()["data"]["task_id"]

    def finished() -> dict[str, Any] | None:
        response = requests.get(f"{flower}/api/task/info/{task_id}", auth=FLOWER_AUTH, timeout=5)
        info = response.json() if response.ok else None
        return info if info and info.get("state") == "SUCCESS" else None

    info = wait_for(finished, 30, "a SUCCESS task in Flower")
    assert info["name"] == names.SYNC
    assert info["runtime"] > 0
    assert info["args"] in (f"['{date}']", [date]), info["args"]
    assert info["kwargs"] in ("{}", {}), info["kwargs"]
    assert "counts" in str(info["result"])
    listed = requests.get(f"{flower}/api/tasks", params={"limit": 50}, auth=FLOWER_AUTH, timeout=5).json()
    assert listed[task_id]["state"] == "SUCCESS"
    shown = json.dumps([info, listed[task_id]])
    leaked = [name for name in patients if name in shown]
    assert not leaked, f"patient names in Flower: {leaked}"

    # The worker's own metrics (parent-only server reading every pool process's samples).
    scrape = requests.get(f"http://127.0.0.1:{settings.worker_metrics_port}/metrics", timeout=5).text
    assert f'clinic_relay_tasks_total{{state="succeeded",task="{names.SYNC}"}}' in scrape
    assert f'clinic_relay_task_duration_seconds_count{{state="succeeded",task="{names.SYNC}"}}' in scrape
    assert (
        'clinic_relay_tebra_call_duration_seconds_count{operation="GetAppointments",outcome="ok"}' in scrape
    )
    assert date not in scrape and task_id not in scrape
    assert not [name for name in patients if name in scrape]

    # One request id from the HTTP request to the task's log lines, in JSON.
    lines = [json.loads(line) for line in _json_lines(logs_dir / "worker.log")]
    task_lines = [line for line in lines if line.get("task_id") == task_id]
    assert task_lines, "the worker logged the task's lines with its id"
    assert {line.get("request_id") for line in task_lines} == {request_id}
    api_lines = [json.loads(line) for line in _json_lines(logs_dir / "api.log")]
    access = [
        line for line in api_lines if line.get("request_id") == request_id and line["message"] == "request"
    ]
    assert access and access[0]["route"] == "/api/v1/schedule/sync" and access[0]["status"] == 202
    every_line = (logs_dir / "worker.log").read_text(errors="replace") + (logs_dir / "api.log").read_text(
        errors="replace"
    )
    assert not [name for name in patients if name in every_line], "no patient names in any log line"
    assert f"date={date}" not in every_line, "no query strings in access lines (gunicorn's is off)"


def _json_lines(path: Path) -> list[str]:
    """The JSON lines of a log its process may be writing to right now: complete lines only (the last may be
    half written; the text after the last newline is not a line yet)."""
    complete = path.read_text(errors="replace").split("\n")[:-1]
    return [line for line in complete if line.startswith("{")]


def test_flowers_shared_account_cannot_send_tasks_or_control_workers(flower: str) -> None:
    """Its one basic-auth account could send any task with any arguments and shut workers down."""
    attempts = [
        ("/api/task/async-apply/schedule.sync", {"args": ["2026-11-30"]}),
        ("/api/task/send-task/schedule.sync", {"args": ["2026-11-30"]}),
        ("/api/task/apply/diagnostics.noop", {"args": [1]}),
        ("/api/task/revoke/0123", None),
        ("/api/task/abort/0123", None),
        ("/api/task/rate-limit/schedule.sync", None),
        ("/api/worker/shutdown/test-worker", None),
        ("/api/worker/pool/restart/test-worker", None),
        ("/api/worker/queue/add-consumer/test-worker", None),
    ]
    for path, body in attempts:
        response = requests.post(f"{flower}{path}", json=body, auth=FLOWER_AUTH, timeout=10)
        assert response.status_code == 404, (path, response.status_code)
    assert requests.get(f"{flower}/api/workers", auth=FLOWER_AUTH, timeout=10).ok  # reading still works
