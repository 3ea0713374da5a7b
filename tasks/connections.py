"""The per-process Redis client: built on first use, rebuilt in a forked child (no I/O at import)."""

from __future__ import annotations

import os
import threading

import redis

from config import Settings

_lock = threading.Lock()
_client: redis.Redis | None = None
_client_pid: int | None = None
_client_url: str | None = None


def make_redis(settings: Settings, url: str | None = None) -> redis.Redis:
    """A new client with timeouts on every edge, decoding replies to str."""
    return redis.Redis.from_url(
        url or settings.redis_url,
        decode_responses=True,
        socket_timeout=settings.redis_socket_timeout_s,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        health_check_interval=30,
        # Commands retried once on a dropped connection; a restarted Redis is met again, not a crash.
        retry_on_timeout=False,
    )


def get_redis(settings: Settings) -> redis.Redis:
    """This process's shared client (thread-safe; a child after fork gets a fresh pool)."""
    global _client, _client_pid, _client_url
    pid = os.getpid()
    if _client is not None and _client_pid == pid and _client_url == settings.redis_url:
        return _client
    with _lock:
        if _client is None or _client_pid != pid or _client_url != settings.redis_url:
            _client = make_redis(settings)
            _client_pid = pid
            _client_url = settings.redis_url
        return _client


def reset_redis() -> None:
    """Forget this process's client; the next get_redis builds a new one (after fork, in tests)."""
    global _client, _client_pid, _client_url
    with _lock:
        _client, _client_pid, _client_url = None, None, None
