"""Fixtures for the whole suite: the real Redis, the Tebra simulator over HTTP, a real prefork Celery worker
and the API under gunicorn, each started once per session and torn down after.

Databases: TEST_REDIS_URL (default db 11) holds the data and is flushed before each test that asks for
``redis_client``; TEST_BROKER_URL (default db 10) is the Celery broker and result backend, flushed once per
session (flushing it under a running worker would drop kombu's queue bindings); db 12 of the same server is
the relay's (tests/integration/ws_support.py) and the watch's broker, db 13 the scratch database of ``r``,
TEST_DRILL_BROKER_URL (default db 15) the worker-death drills' broker.

In parallel (``make test`` runs pytest-xdist workers) each worker is a session of its own: its own Redis
server (tests/support/worker_redis.py), simulator, worker and API. How the tests are spread over the workers
is :func:`pytest_collection_modifyitems`'s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from config import Settings, load_settings
from scripts import redis_server
from tests.support.alone import turn
from tests.support.processes import BIN, free_port, spawn, start_worker, stop, wait_until
from tests.support.worker_redis import use_own_server_under_xdist

# Before any URL is read: under xdist this worker's own server replaces the one TEST_*_URL name.
use_own_server_under_xdist()
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
TEST_BROKER_URL = os.environ.get("TEST_BROKER_URL", "redis://127.0.0.1:6379/10")
TEST_DRILL_BROKER_URL = os.environ.get("TEST_DRILL_BROKER_URL", TEST_REDIS_URL.rsplit("/", 1)[0] + "/15")
# The database of the tests that need a real Redis but no stack (throttle, sync-start and gateway scripts):
# db 13 of the test server.
SCRATCH_REDIS_URL = TEST_REDIS_URL.rsplit("/", 1)[0] + "/13"


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


def flushed_client(url: str) -> Iterator[redis.Redis]:
    """A decoding client on ``url``'s database, flushed before the test; closed after."""
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def redis_client(redis_service: str) -> Iterator[redis.Redis]:
    """A client on the flushed data database."""
    yield from flushed_client(TEST_REDIS_URL)


@pytest.fixture
def r() -> Iterator[redis.Redis]:
    """A client on SCRATCH_REDIS_URL (db 13 of the test server), flushed before and after; skips the test
    when no Redis answers (these tests start none)."""
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
    """A real prefork Celery worker (2 processes) on the test broker, talking to the simulator.

    What earlier tests queued with no worker to run it (a sync asked of the in-process app) is dropped
    first: run now, it would land in the middle of whichever test starts the worker. Only the queues go
    (kombu's lists and its unacked set); the bindings stay for the API that may already be publishing.
    """
    broker = redis.Redis.from_url(TEST_BROKER_URL, socket_timeout=5)
    stale = [*broker.scan_iter(_type="list"), "unacked", "unacked_index"]
    broker.delete(*stale)
    broker.close()
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


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """How a parallel run (``--dist loadgroup``, setup.cfg) spreads the tests over its workers.

    The tests of a file go to one worker together, in order, so that its module fixtures (an API, a browser,
    Sentinel groups, the watch's worker) start once; a test marked ``slow`` is a unit of its own instead
    (tens of seconds of waiting are worth starting its module's fixtures on another worker). A test's own
    ``xdist_group`` mark wins over both, and the ``alone`` tests are one unit, handed out last. Under xdist
    the units holding slow tests are handed out first, longest first by the sum of their
    ``slow(seconds=…)``, then the other units, most tests first, so that the run does not end with one
    worker waiting out a long drill; the order inside a unit stays the collection's.
    """
    units = []
    for item in items:
        if item.get_closest_marker("alone") is not None:  # one unit, last: see tests/support/alone.py
            item.add_marker(pytest.mark.xdist_group("alone"))
        group = item.get_closest_marker("xdist_group")
        if group is None and item.get_closest_marker("slow") is None:
            by_file = pytest.mark.xdist_group(item.nodeid.split("::", 1)[0])
            item.add_marker(by_file)
            group = by_file.mark
        units.append(item.nodeid if group is None else _group_name(group))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        slow_s: dict[str, float] = {}
        for unit, item in zip(units, items, strict=True):
            slow_s[unit] = slow_s.get(unit, 0.0) + _slow_seconds(item)
        size = Counter(units)
        order = sorted(  # stable: ties keep the collection's order
            range(len(items)), key=lambda i: (units[i] == "alone", -slow_s[units[i]], -size[units[i]])
        )
        items[:] = [items[i] for i in order]


@pytest.hookimpl(hookwrapper=True, tryfirst=True)  # outside pytest-timeout: a wait for a turn is no test time
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """In a parallel run a test marked ``alone`` runs while no other test does (tests/support/alone.py)."""
    basetemp = item.config.option.basetemp  # an xdist worker's: <the run's temporary folder>/popen-gwN
    shared = Path(basetemp).parent if os.environ.get("PYTEST_XDIST_WORKER") and basetemp else None
    with turn(item.get_closest_marker("alone") is not None, shared):
        yield


def pytest_collection_finish(session: pytest.Session) -> None:
    """A parallel run whose groups did not take refuses to go on: it would schedule every test alone and
    start each module's fixtures over and over (pytest 9.2 with pytest-xdist 3.8 did so silently)."""
    if os.environ.get("PYTEST_XDIST_WORKER") and session.config.getvalue("loadgroup"):
        grouped = [item for item in session.items if item.get_closest_marker("xdist_group") is not None]
        if grouped and all("@" not in item.nodeid for item in grouped):
            raise pytest.UsageError(
                "pytest-xdist ignored the xdist_group marks (--dist loadgroup): see the pin of pytest"
            )


def _group_name(mark: pytest.Mark) -> str:
    """The group an ``xdist_group`` mark names, read as pytest-xdist reads it."""
    return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))


def _slow_seconds(item: pytest.Item) -> float:
    """How long a ``slow`` test takes, as its mark says (a plain mark counts as 10 s); 0 for the others."""
    mark = item.get_closest_marker("slow")
    return 0.0 if mark is None else float(mark.kwargs.get("seconds", 10))


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"test redis: {TEST_REDIS_URL} (broker {TEST_BROKER_URL}); python {sys.version.split()[0]}"]


def dump(value: Any) -> str:
    """Pretty JSON for assertion messages."""
    return json.dumps(value, indent=1, sort_keys=True, default=str)
