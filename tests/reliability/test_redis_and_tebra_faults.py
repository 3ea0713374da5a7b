"""Fault drills on a Redis server of the test's own: Redis restarted under a burst of syncs; Tebra hanging.

Each drill runs its own Redis (scripts/redis_server.py: AOF everysec, on a free port, data in a temporary
folder), its own prefork worker and, for the restart, its own API under gunicorn and its own beat (the sweep
that sends a lost sync message again), so stopping Redis or
tying up the worker touches nothing the rest of the suite uses. The worker runs with short time limits and
a 15 s visibility timeout (production: BROKER_VISIBILITY_TIMEOUT_S, 900 s; docs/reliability.md).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from config import load_settings
from scripts import redis_server
from tasks import keys, names
from tasks.breaker.store import BreakerStore
from tests.support.processes import BIN, free_port, spawn, start_beat, stop, wait_until
from tests.support.processes import start_worker as start_celery_worker

DRILL_ENV = {
    "TASK_SOFT_TIME_LIMIT_S": "8",
    "TASK_TIME_LIMIT_S": "10",
    "RETRY_BACKOFF_MAX_S": "2",
    "BROKER_VISIBILITY_TIMEOUT_S": "15",
    "PATIENT_DETAILS_ENABLED": "false",
    "REDIS_SOCKET_TIMEOUT_S": "2",
    "REDIS_CONNECT_TIMEOUT_S": "1",
    # Beat (the restart drill's) runs only the sweep, and often: a sync whose message was popped but not yet
    # recorded unacknowledged when Redis stopped is sent again within seconds (tasks/sync/sweep.py).
    "TEBRA_POLL_INTERVAL_S": "0",
    "SYNC_SWEEP_INTERVAL_S": "3",
}


@dataclass
class OwnRedis:
    """A real server on a free port; stop and start it again on the same port and data folder."""

    port: int
    data_dir: Path
    proc: Any = None
    stops: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def broker_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/1"

    def start(self) -> None:
        self.proc = redis_server.start(self.url, self.data_dir)

    def stop(self) -> None:
        """SIGTERM, as an orderly restart does (Redis fsyncs the AOF and exits)."""
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(free_port(), tmp_path / "redis")
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.proc.terminate()
        server.proc.wait(10)


@pytest.fixture
def own_env(stack_env: dict[str, str], own_redis: OwnRedis) -> dict[str, str]:
    return {
        **stack_env,
        **DRILL_ENV,
        "REDIS_URL": own_redis.url,
        "CELERY_BROKER_URL": own_redis.broker_url,
        "CELERY_RESULT_BACKEND": own_redis.broker_url,
        "WORKER_METRICS_PORT": str(free_port()),
    }


def start_api(env: dict[str, str], log: Path) -> tuple[Any, str]:
    port = free_port()
    proc = spawn(
        [str(BIN / "gunicorn"), "-c", "app/gunicorn_conf.py", "--bind", f"127.0.0.1:{port}", "app.wsgi:app"],
        env,
        log,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(f"{base}/health", timeout=1).ok, 30, "drill api", proc, log)
    return proc, base


def weekdays(count: int, offset_days: int) -> list[str]:
    import datetime as dt

    day = dt.date.today() + dt.timedelta(days=offset_days)
    found: list[str] = []
    while len(found) < count:
        if day.weekday() < 5:
            found.append(day.isoformat())
        day += dt.timedelta(days=1)
    return found


def synced_events(client: redis.Redis, task_id: str) -> int:
    return sum(
        1
        for _, f in client.xrange(keys.AGENT_UPDATES)
        if f["action"] == "schedule_synced" and json.loads(f["payload"]).get("task_id") == task_id
    )


@pytest.mark.slow(seconds=10)
def test_redis_restart_during_a_burst_loses_no_accepted_sync(
    own_env: dict[str, str], own_redis: OwnRedis, auth_headers: dict[str, str], logs_dir: Path, tmp_path: Path
) -> None:
    """Promise: while Redis is down the API answers 503 SERVICE_UNAVAILABLE (never a 500, never a hang past
    its timeouts); once Redis is back the API and the workers recover by themselves, with no restart; every
    sync the API accepted (202) before, during or after ends ``succeeded``, once in effect."""
    worker = start_worker(own_env, logs_dir / "drill-redis-worker.log", 2)
    beat = start_beat(own_env, logs_dir / "drill-redis-beat.log", tmp_path / "beat-schedule")
    api, base = start_api(own_env, logs_dir / "drill-redis-api.log")
    dates = weekdays(40, 30)
    accepted: dict[str, str] = {}  # date -> task id
    answers: list[tuple[float, float, int, str]] = []  # (sent, answered, status, error code)
    stop_burst = threading.Event()

    def burst() -> None:
        session = requests.Session()
        pending = list(dates)
        while pending and not stop_burst.is_set():
            date = pending[0]
            sent = time.monotonic()
            try:
                response = session.post(
                    f"{base}/api/v1/schedule/sync?date={date}", headers=auth_headers, timeout=10
                )
            except requests.RequestException as exc:
                answers.append((sent, time.monotonic(), 0, type(exc).__name__))
                time.sleep(0.1)
                continue
            body = response.json()
            code = "" if response.ok else body["error"]["code"]
            answers.append((sent, time.monotonic(), response.status_code, code))
            if response.status_code == 202:
                accepted[date] = body["data"]["task_id"]
                pending.pop(0)
            time.sleep(0.1)  # ~8 requests a second: some queued, some running when Redis goes

    sender = threading.Thread(target=burst, daemon=True)
    try:
        sender.start()
        wait_until(lambda: len(accepted) >= 8, 30, "first syncs accepted")
        own_redis.stop()
        down_at = time.monotonic()  # after stop() returned: the server is gone
        time.sleep(3)
        restarting_at = time.monotonic()  # before start(): the server is not back yet
        own_redis.start()
        up_at = time.monotonic()
        sender.join(120)
        assert not sender.is_alive(), f"burst did not finish: {len(accepted)} of {len(dates)} accepted"
        client = redis.Redis.from_url(own_redis.url, decode_responses=True)
        deadline = time.monotonic() + 60
        states: dict[str, str | None] = {}
        while time.monotonic() < deadline:
            states = {d: client.hget(keys.sync_status(d), "state") for d in accepted}
            if all(state == "succeeded" for state in states.values()):
                break
            time.sleep(0.2)
        recovered_s = time.monotonic() - up_at
    finally:
        stop_burst.set()
        stop(api)
        stop(beat)
        stop(worker)

    # Requests sent after Redis was gone and answered before it came back (one sent just before the stop
    # may still be answered 202 a moment after it: it was accepted while Redis was up).
    during = [
        (status, code)
        for sent, answered, status, code in answers
        if down_at <= sent and answered <= restarting_at
    ]
    assert during, "no request was answered while Redis was down"
    assert all(status == 503 and code == "SERVICE_UNAVAILABLE" for status, code in during), during
    assert not [a for a in answers if a[2] >= 500 and a[2] != 503], answers
    assert len(accepted) == len(dates)
    assert all(state == "succeeded" for state in states.values()), {
        d: s for d, s in states.items() if s != "succeeded"
    }
    for date, task_id in accepted.items():
        assert client.hget(keys.sync_status(date), "task_id") == task_id
        assert synced_events(client, task_id) == 1, date  # once in effect: one announcement per sync
    first_ok_after = min(
        (answered for _, answered, status, _ in answers if answered > up_at and status == 202), default=None
    )
    api_back_s = None if first_ok_after is None else round(first_ok_after - up_at, 2)
    print(
        f"redis down {up_at - down_at:.1f}s: {len(during)} answers, all 503 SERVICE_UNAVAILABLE;"
        f" API accepting again {api_back_s}s after restart; all {len(accepted)} accepted syncs succeeded"
        f" {recovered_s:.1f}s after restart"
    )


def test_a_hanging_tebra_times_out_frees_the_worker_and_is_retried(
    own_env: dict[str, str], own_redis: OwnRedis, simulator: Any, logs_dir: Path
) -> None:
    """Promise: a Tebra call that hangs is cut at TEBRA_OPERATION_TIMEOUT_S; the worker process is freed (the
    retry waits as a countdown, not in the process), so other syncs go on meanwhile; the sync is retried and
    succeeds once Tebra answers; the breaker counts the failure."""
    env = {**own_env, "TEBRA_OPERATION_TIMEOUT_S": "2"}
    settings = load_settings(env)
    hang_s = 8
    simulator.set_faults(hang={"seconds": hang_s, "count": 1, "operations": ["GetAppointments"]})
    worker = start_worker(env, logs_dir / "drill-hang-worker.log", 1)  # one process: it must be freed
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    from tasks.celery_factory import SYNC_QUEUE, create_celery

    app = create_celery(settings)
    hung_date, other_date = weekdays(2, 60)
    try:
        started = time.monotonic()
        hung = app.send_task(names.SYNC, args=[hung_date], queue=SYNC_QUEUE)
        wait_until(lambda: client.hget(keys.sync_status(hung_date), "state") == "retrying", 20, "timeout")
        timed_out_s = time.monotonic() - started
        status = client.hgetall(keys.sync_status(hung_date))
        breaker = BreakerStore.from_settings(client, settings).snapshot()
        app.send_task(names.SYNC, args=[other_date], queue=SYNC_QUEUE)
        # The only pool process is free while the hung sync waits for its retry.
        wait_until(lambda: client.hget(keys.sync_status(other_date), "state") == "succeeded", hang_s, "other")
        other_done_s = time.monotonic() - started
        wait_until(lambda: client.hget(keys.sync_status(hung_date), "state") == "succeeded", 30, "the retry")
        hung_done_s = time.monotonic() - started
    finally:
        stop(worker)
        simulator.reset()
    assert status["error"] == "TEBRA_UPSTREAM", status
    assert timed_out_s >= 1.5 and timed_out_s < 6, timed_out_s  # cut at the 2 s operation timeout, not at 8 s
    assert breaker["failures"]["in_window"] >= 1, breaker  # tasks/breaker/guard.py counted the timeout
    assert client.hget(keys.sync_status(hung_date), "state") == "succeeded"
    assert int(client.hget(keys.sync_status(hung_date), "attempt") or 0) >= 1
    assert synced_events(client, hung.id) == 1
    print(
        f"hung call cut after {timed_out_s:.1f}s (timeout 2 s, hang {hang_s} s); other sync done at"
        f" {other_done_s:.1f}s on the same single process; hung sync retried and done at {hung_done_s:.1f}s;"
        f" breaker failures in window: {breaker['failures']['in_window']}"
    )


def start_worker(env: dict[str, str], log: Path, concurrency: int) -> Any:
    return start_celery_worker(env, log, name=log.stem, concurrency=concurrency)
