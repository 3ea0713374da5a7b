"""A worker's heartbeat in Redis, so the API's /ready can tell a live worker without asking Celery
(``inspect ping`` costs a broadcast and a second of waiting)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import redis

from config import Settings
from tasks import keys
from tasks.connections import make_redis

log = logging.getLogger(__name__)

INTERVAL_S = 5.0


class Heartbeat:
    """A daemon thread writing ``workers:alive[hostname] = now`` every few seconds."""

    def __init__(self, settings: Settings, hostname: str) -> None:
        self._settings = settings
        self._hostname = hostname
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):  # if Redis is away the entry ages out by itself
            make_redis(self._settings).zrem(keys.WORKERS_ALIVE, self._hostname)

    def _run(self) -> None:
        client = make_redis(self._settings)
        while not self._stop.is_set():
            try:
                now = time.time()
                pipe = client.pipeline(transaction=False)
                pipe.zadd(keys.WORKERS_ALIVE, {self._hostname: now})
                pipe.zremrangebyscore(keys.WORKERS_ALIVE, "-inf", now - 3600)
                pipe.execute()
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", type(exc).__name__)
            self._stop.wait(INTERVAL_S)
