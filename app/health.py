"""``/health`` (the process is up) and ``/ready`` (Redis, the broker, a live worker, a live audit writer).

``/ready`` answers within ``BUDGET_S`` whatever hangs: the checks run side by side on a small thread pool,
each Redis command has a short socket timeout and no retries, and a check still running when the budget is
spent is reported as ``timeout``. Each check says what it saw (``ok``, ``detail``, ``ms``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import redis
from flask import Blueprint, Response, jsonify

from app.services import services
from tasks import credentials_latch, keys
from tasks.liveness import AUDIT_WRITER_ALIVE

bp = Blueprint("health", __name__)

BUDGET_S = 0.08  # every check together; the probe's own limit is 100 ms
CHECK_TIMEOUT_S = 0.05  # one Redis command (connect or reply)
TEBRA_PROBE = "tebra"  # reported beside the checks, not one of them
WORKER_FRESH_S = 20  # a worker beats every 5 s (workers/heartbeat.py): four missed beats is gone

# Probes of a hung Redis park a thread each for CHECK_TIMEOUT_S at most: a few threads are plenty.
_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ready-check")
_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


@bp.get("/health")
def health() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/ready")
def ready() -> Response:
    settings = services().settings
    data = _client(settings.redis_url)
    broker = _client(settings.broker_url)
    probes: dict[str, Callable[[], Any]] = {
        "redis": lambda: bool(data.ping()),
        "broker": lambda: bool(broker.ping()),
        "worker": lambda: _live_workers(data),
        "audit_writer": lambda: _audit_writer_age(data),
        TEBRA_PROBE: lambda: _tebra_credentials(data),
    }
    checks = run_checks(probes, BUDGET_S)
    # The credentials latch is reported, not failed on: with Tebra's credentials refused the board still
    # serves what it has, so the API stays in rotation; the operator reads why Tebra is not called.
    tebra = next(check for check in checks if check["name"] == TEBRA_PROBE)
    checks.remove(tebra)
    ok = all(check["ok"] for check in checks)
    body: dict[str, Any] = {"status": "ready" if ok else "unavailable", "checks": checks}
    body["tebra"] = tebra["detail"] if tebra["ok"] else {"credentials": "unknown", "detail": tebra["detail"]}
    response = jsonify(body)
    response.status_code = 200 if ok else 503
    return response


def run_checks(probes: dict[str, Callable[[], Any]], budget_s: float) -> list[dict[str, Any]]:
    """Run every probe at once; whatever has not answered within ``budget_s`` is a ``timeout``."""
    started = time.perf_counter()
    deadline = started + budget_s
    futures = {name: _pool.submit(_timed, probe) for name, probe in probes.items()}
    checks = []
    for name, future in futures.items():
        try:
            ok, detail, ms = future.result(timeout=max(0.0, deadline - time.perf_counter()))
        except FutureTimeout:
            future.cancel()
            ok, detail, ms = False, "timeout", round((time.perf_counter() - started) * 1000, 1)
        checks.append({"name": name, "ok": ok, "detail": detail, "ms": ms})
    return checks


def _timed(probe: Callable[[], Any]) -> tuple[bool, Any, float]:
    started = time.perf_counter()
    try:
        detail, ok = probe(), True
    except LookupError as exc:  # the dependency answered: nothing alive
        detail, ok = str(exc), False
    except (redis.RedisError, OSError, ValueError) as exc:
        detail, ok = type(exc).__name__, False
    return ok, detail, round((time.perf_counter() - started) * 1000, 1)


def _client(url: str) -> redis.Redis:
    """One client per URL per process: no connection setup per probe, short timeouts, no retries."""
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(
                url,
                socket_timeout=CHECK_TIMEOUT_S,
                socket_connect_timeout=CHECK_TIMEOUT_S,
                decode_responses=True,
                retry=None,  # redis-py retries a timeout 3 times with backoff by default
            )
            _clients[url] = client
        return client


def _live_workers(client: redis.Redis) -> int:
    alive = int(client.zcount(keys.WORKERS_ALIVE, time.time() - WORKER_FRESH_S, "+inf"))
    if not alive:
        raise LookupError("no worker heartbeat")
    return alive


def _tebra_credentials(client: redis.Redis) -> dict[str, Any]:
    """``{"credentials": "ok" | "refused", ...}``: the Tebra credentials latch (docs/tebra.md)."""
    refused_at, _ = credentials_latch.guard_fields(client)
    if refused_at:
        return {"credentials": "refused", "refused_at": refused_at, "resume": "POST /api/v1/ops/tebra"}
    return {"credentials": "ok"}


def _audit_writer_age(client: redis.Redis) -> dict[str, float]:
    beat = client.get(AUDIT_WRITER_ALIVE)
    if beat is None:
        raise LookupError("no audit writer heartbeat")
    return {"age_s": round(max(0.0, time.time() - float(beat)), 1)}
