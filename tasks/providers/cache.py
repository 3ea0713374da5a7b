"""``cache:providers``: the practice's providers, fresh for an hour, kept longer as a stale fallback.

The key holds ``{"fetched_at", "fresh_until", "providers"}``. Redis keeps it for a week, so that when Tebra
is down or the breaker is open the API can still serve the last list, flagged ``stale``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery

from tasks import keys, names
from tasks.celery_factory import SYNC_QUEUE
from tasks.events import utc_now_iso

STALE_KEEP_S = 7 * 86400
REFRESH_LOCK = "cache:providers:refreshing"


@dataclass(frozen=True)
class CachedProviders:
    providers: list[dict[str, Any]]
    fetched_at: str
    fresh: bool


def read(client: redis.Redis) -> CachedProviders | None:
    raw = client.get(keys.PROVIDERS_CACHE)
    if not raw:
        return None
    blob = json.loads(raw)
    return CachedProviders(blob["providers"], blob["fetched_at"], time.time() < float(blob["fresh_until"]))


def write(client: redis.Redis, providers: list[dict[str, Any]], ttl_s: int) -> None:
    blob = {"fetched_at": utc_now_iso(), "fresh_until": time.time() + ttl_s, "providers": providers}
    client.set(keys.PROVIDERS_CACHE, json.dumps(blob, sort_keys=True), ex=max(ttl_s, STALE_KEEP_S))


def claim_refresh(client: redis.Redis, window_s: int = 30) -> bool:
    """True for the one caller that should enqueue a refresh in this window."""
    return bool(client.set(REFRESH_LOCK, "1", nx=True, ex=window_s))


def request_refresh(
    client: redis.Redis, celery: Celery, cached: CachedProviders | None, *, first_fill_wait_s: float
) -> CachedProviders | None:
    """Queue ``providers.refresh`` when ``cached`` is missing or stale (one caller per window: the others
    serve what is cached meanwhile). With nothing cached yet, wait up to ``first_fill_wait_s`` for the first
    fill, reading the cache (never the task); returns what is cached then (None: not yet)."""
    if (cached is None or not cached.fresh) and claim_refresh(client):
        celery.send_task(names.REFRESH_PROVIDERS, queue=SYNC_QUEUE)
    if cached is None:
        deadline = time.monotonic() + first_fill_wait_s
        while cached is None and time.monotonic() < deadline:
            time.sleep(0.05)
            cached = read(client)
    return cached
