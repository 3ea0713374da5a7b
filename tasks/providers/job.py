"""Celery task shell: refresh ``cache:providers`` from Tebra, under the one retry policy (tasks/retry.py).
The API queues it (tasks/providers/cache.py ``request_refresh``) when the list is missing or stale."""

from __future__ import annotations

from typing import Any

import redis
from celery import Task, shared_task

from config import Settings
from tasks import names
from tasks.job import Outcome, attempt_of, conclude, outcome_of, task_settings
from tasks.providers import cache
from tasks.providers.fill import ProviderSource
from tasks.retry import CIRCUIT_OPEN, FAIL, Limits
from tasks.runtime import get_runtime

REFRESH_RETRIES = 5  # the API serves the stale list meanwhile; the next stale read asks again


def refresh_limits(settings: Settings) -> Limits:
    """A refresh waits with an open breaker for its next trial, but not with one an operator holds open."""
    return Limits(
        REFRESH_RETRIES,
        settings.breaker_open_s,
        settings.retry_backoff_max_s,
        throttle_retries=REFRESH_RETRIES,
        wait_held_open=False,
    )


def refresh(
    client: redis.Redis, source: ProviderSource, ttl_s: int, *, attempt: int, deferrals: int, limits: Limits
) -> Outcome:
    """Fetch the providers and cache them for ``ttl_s`` (the result: the count), or the policy's verdict.
    A breaker held open by an operator ends the refresh, deferred: the API asks again once it is cleared."""
    outcome = outcome_of(source.get_providers, attempt=attempt, deferrals=deferrals, limits=limits)
    verdict = outcome.verdict
    if verdict is None:
        cache.write(client, outcome.result, ttl_s)
        return Outcome({"providers": len(outcome.result)})
    if verdict.action == FAIL and verdict.code == CIRCUIT_OPEN:
        return Outcome({"providers": None, "deferred": True})
    return outcome


@shared_task(
    name=names.REFRESH_PROVIDERS, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None
)
def refresh_providers(self: Task, deferrals: int = 0) -> dict[str, Any]:
    """Fetch the providers and cache them for PROVIDERS_CACHE_TTL_S; returns the count."""
    settings = task_settings(self)
    runtime = get_runtime(settings)
    outcome = refresh(
        runtime.redis,
        runtime.gateway,
        settings.providers_cache_ttl_s,
        attempt=attempt_of(self, deferrals),
        deferrals=deferrals,
        limits=refresh_limits(settings),
    )
    result: dict[str, Any] = conclude(self, outcome, deferrals)
    return result
