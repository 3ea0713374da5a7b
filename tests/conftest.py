"""Fixtures for the whole suite: the real Redis, the Tebra simulator over HTTP, a real prefork Celery worker
and the API under gunicorn, each started once per session and torn down after.

Databases: TEST_REDIS_URL (default db 11) holds the data and is flushed before each test that asks for
``redis_client``; TEST_BROKER_URL (default db 10) is the Celery broker and result backend, flushed once per
session (flushing it under a running worker would drop kombu's queue bindings).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from config import Settings, load_settings
from scripts import redis_server
from tests.support.processes import BIN, free_port, spawn, start_worker, stop, wait_until

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
TEST_BROKER_URL = os.environ.get("TEST_BROKER_URL", "redis://127.0.0.1:6379/10")
# The database of the tests that need a real Redis but no stack (throttle, sync-start and gateway scripts).
SCRATCH_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the logs of the processes the suite starts (printed when one fails to start)."""
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The test Redis URL; starts a real server on its port when none answers (a fresh machine)."""
    proc = None
    if not redis_server.answers(TEST_REDIS_URL):
        proc = redis_server.start(TEST_REDIS_URL, tmp_path_factory.mktemp("redis"))
    redis.Redis.from_url(TEST_BROKER_URL).flushdb()
    yield TEST_REDIS_URL
    if proc is not None:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def simulator(redis_service: str) -> Iterator[Any]:
    """The Tebra simulator as a subprocess over real HTTP, throttle off (tests about it turn it on)."""
    from tests.support.simulator import start_simulator

    with start_simulator(throttle=False) as sim:
        yield sim


@pytest.fixture(scope="session")
def dev_key_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Where this session's development signing key lives (AUTH_MODE=dev; made on first use)."""
    return str(tmp_path_factory.mktemp("auth") / "dev-signing-key.pem")


@pytest.fixture
def sim(simulator: Any) -> Iterator[Any]:
    """The session simulator reset to its seed (throttle off, no faults, counters at zero), reset after."""
    simulator.reset()
    simulator.set_faults(throttle=False)
    yield simulator
    simulator.reset()
    simulator.set_faults(throttle=False)


@pytest.fixture(scope="session")
def base_env(redis_service: str, dev_key_path: str) -> dict[str, str]:
    """The environment of a process that needs Redis but not Tebra."""
    return {
        "APP_ENV": "test",
        "REDIS_URL": TEST_REDIS_URL,
        "CELERY_BROKER_URL": TEST_BROKER_URL,
        "CELERY_RESULT_BACKEND": TEST_BROKER_URL,
        "LOG_LEVEL": "INFO",
        "AUTH_MODE": "dev",
        "DEV_KEY_PATH": dev_key_path,
    }


@pytest.fixture(scope="session")
def make_token(dev_key_path: str) -> Any:
    """A factory of development bearer tokens: ``make_token(scopes=[...], sub=..., ttl_s=...)``.

    Signed with the session's dev key, accepted by every API the suite starts (AUTH_MODE=dev).
    """
    from app import devkey, devtoken
    from app.scopes import ALL_SCOPES

    key = devkey.load_or_create(dev_key_path)
    audience = Settings().auth0_audience

    def make(scopes: Any = None, sub: str = "test|user", ttl_s: int = 3600) -> str:
        chosen = ALL_SCOPES if scopes is None else tuple(scopes)
        return devtoken.mint(key, audience=audience, scopes=chosen, subject=sub, ttl_s=ttl_s)

    return make


@pytest.fixture(scope="session")
def auth_headers(make_token: Any) -> dict[str, str]:
    """``Authorization: Bearer …`` with every scope, for tests about something other than auth."""
    return {"Authorization": f"Bearer {make_token()}"}


@pytest.fixture(scope="session")
def stack_env(base_env: dict[str, str], simulator: Any) -> dict[str, str]:
    """The environment every process of the stack runs with in tests."""
    return {
        **base_env,
        "TEBRA_WSDL_URL": simulator.wsdl_url,
        "TEBRA_THROTTLE_ENABLED": "false",
        # Tests count the calls the simulator sees; the periodic GetThrottles has its own test.
        "TEBRA_THROTTLES_REFRESH_MINUTES": "0",
        "TEBRA_OPERATION_TIMEOUT_S": "10",
        "TASK_MAX_RETRIES": "3",
        "RETRY_BACKOFF_MAX_S": "4",
        # The stack tests poll status many times a second; rate limits have their own tests.
        "RATE_LIMIT_CAPACITY": "100000",
        # Its own port: the default (9808) may be taken by a dev worker or another session's.
        "WORKER_METRICS_PORT": str(free_port()),
    }


@pytest.fixture(scope="session")
def settings(stack_env: dict[str, str]) -> Settings:
    """The settings the stack's processes run with."""
    return load_settings(stack_env)


@pytest.fixture
def redis_client(redis_service: str) -> Iterator[redis.Redis]:
    """A client on the flushed data database."""
    client = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True, socket_timeout=5)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def r() -> Iterator[redis.Redis]:
    """A client on SCRATCH_REDIS_URL (TEST_REDIS_URL, default db 13), flushed before and after; skips the
    test when no Redis answers (these tests start none)."""
    client = redis.Redis.from_url(SCRATCH_REDIS_URL, decode_responses=True, socket_timeout=5)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {SCRATCH_REDIS_URL}")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def worker(stack_env: dict[str, str], logs_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real prefork Celery worker (2 processes) on the test broker, talking to the simulator."""
    log = logs_dir / "worker.log"
    proc = start_worker(stack_env, log, name="test-worker", concurrency=2)
    yield proc
    stop(proc)


@pytest.fixture(scope="session")
def api_server(stack_env: dict[str, str], logs_dir: Path) -> Iterator[str]:
    """The API under gunicorn (gthread) on a free port; yields its base URL."""
    port = free_port()
    log = logs_dir / "api.log"
    proc = spawn(
        [str(BIN / "gunicorn"), "-c", "app/gunicorn_conf.py", "--bind", f"127.0.0.1:{port}", "app.wsgi:app"],
        stack_env,
        log,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(f"{base}/health", timeout=1).ok, 30, "api", proc, log)
    yield base
    stop(proc)


@pytest.fixture
def app(base_env: dict[str, str], redis_client: redis.Redis) -> Any:
    """The Flask app on the test Redis, in-process (REST tests that need no socket and no Tebra)."""
    from app import create_app

    flask_app = create_app(load_settings(base_env))
    flask_app.testing = True
    return flask_app


@pytest.fixture
def client(app: Any) -> Any:
    """Flask's test client for ``app``."""
    return app.test_client()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"test redis: {TEST_REDIS_URL} (broker {TEST_BROKER_URL}); python {sys.version.split()[0]}"]


def dump(value: Any) -> str:
    """Pretty JSON for assertion messages."""
    return json.dumps(value, indent=1, sort_keys=True, default=str)
