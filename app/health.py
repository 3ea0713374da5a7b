"""``/health`` (the process is up) and ``/ready`` (Redis, the broker and a live worker answer).

Readiness uses its own client with a short timeout: a hung dependency makes ``/ready`` say so quickly
instead of hanging the probe.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from flask import Blueprint, Response, jsonify

from app.services import services
from tasks import keys

bp = Blueprint("health", __name__)

CHECK_TIMEOUT_S = 0.03
WORKER_FRESH_S = 20


@bp.get("/health")
def health() -> Response:
    return jsonify({"status": "ok"})


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=CHECK_TIMEOUT_S, socket_connect_timeout=CHECK_TIMEOUT_S, decode_responses=True
    )


def _check(name: str, probe: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = probe()
        ok = True
    except (redis.RedisError, OSError) as exc:
        detail, ok = type(exc).__name__, False
    return {"name": name, "ok": ok, "detail": detail, "ms": round((time.perf_counter() - started) * 1000, 1)}


@bp.get("/ready")
def ready() -> Response:
    settings = services().settings
    data_redis = _client(settings.redis_url)
    broker = data_redis if settings.broker_url == settings.redis_url else _client(settings.broker_url)

    def live_workers() -> int:
        alive = data_redis.zcount(keys.WORKERS_ALIVE, time.time() - WORKER_FRESH_S, "+inf")
        if not alive:
            raise OSError("no worker heartbeat")
        return int(alive)

    checks = [
        _check("redis", lambda: bool(data_redis.ping())),
        _check("broker", lambda: bool(broker.ping())),
        _check("worker", live_workers),
    ]
    ok = all(check["ok"] for check in checks)
    response = jsonify({"status": "ready" if ok else "unavailable", "checks": checks})
    response.status_code = 200 if ok else 503
    return response
