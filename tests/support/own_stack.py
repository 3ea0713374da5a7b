"""A stack of a test's own: its Redis, a prefork worker and the API, torn down by pid.

For tests whose worker must start in a state the session's worker cannot have (credentials from a file,
Tebra's WSDL unreachable at start-up); the session's simulator is shared.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
import requests

from scripts import redis_server
from tests.support.processes import BIN, free_port, spawn, start_worker, stop, wait_until


@dataclass(frozen=True)
class OwnStack:
    base_url: str  # the API
    redis: redis.Redis  # a client on the stack's data database
    env: dict[str, str]


@contextmanager
def own_stack(
    stack_env: Mapping[str, str], tmp_path: Path, logs_dir: Path, name: str, **extra: str
) -> Iterator[OwnStack]:
    """Redis on a free port, a 2-process worker and the API, with ``stack_env`` and ``extra`` settings."""
    port = free_port()
    server = redis_server.start(f"redis://127.0.0.1:{port}/0", tmp_path / f"{name}-redis")
    env = {
        **stack_env,
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/1",
        "CELERY_RESULT_BACKEND": f"redis://127.0.0.1:{port}/1",
        "WORKER_METRICS_PORT": str(free_port()),
        "PATIENT_DETAILS_ENABLED": "false",
        **extra,
    }
    client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True, socket_timeout=5)
    worker = api = None
    try:
        worker = start_worker(env, logs_dir / f"{name}-worker.log", name=f"{name}-worker", concurrency=2)
        api_port = free_port()
        api_log = logs_dir / f"{name}-api.log"
        api = spawn(
            [
                str(BIN / "gunicorn"),
                "-c",
                "app/gunicorn_conf.py",
                "--bind",
                f"127.0.0.1:{api_port}",
                "app.wsgi:app",
            ],
            env,
            api_log,
        )
        base = f"http://127.0.0.1:{api_port}"
        wait_until(lambda: requests.get(f"{base}/health", timeout=1).ok, 30, f"{name} api", api, api_log)
        yield OwnStack(base, client, env)
    finally:
        client.close()
        for proc in (api, worker):
            if proc is not None:
                stop(proc)
        server.terminate()
        server.wait(10)
