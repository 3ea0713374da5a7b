"""The practice's providers, from the cache; a stale copy (flagged) rather than nothing when Tebra is away."""

from __future__ import annotations

import math

from flask import Response
from marshmallow import fields

from app.api import bp
from app.errors import ApiError, success
from app.ratelimit import READ_COST
from app.route import Answer, route
from app.scopes import READ_SCHEDULE
from app.services import services
from tasks.breaker.glance import Glance, glance
from tasks.providers import cache

FIRST_FILL_WAIT_S = 3.0  # a cold cache waits this long for the first fetch, then answers 503


@route(
    bp,
    "GET",
    "/providers",
    summary="The practice's providers (cached 1 h; stale while Tebra is away)",
    scope=READ_SCHEDULE,
    cost=READ_COST,
    answer=Answer(
        many=True,
        description="providers",
        extra={"stale": fields.Boolean(), "fetched_at": fields.String(), "breaker": fields.String()},
    ),
)
def list_providers() -> Response:
    svc = services()
    cached = cache.read(svc.redis)
    breaker = glance(svc.redis)
    if breaker.is_open:
        return _while_breaker_open(cached, breaker)
    cached = cache.request_refresh(svc.redis, svc.celery, cached, first_fill_wait_s=FIRST_FILL_WAIT_S)
    if cached is None:
        raise ApiError(
            "SERVICE_UNAVAILABLE",
            "Providers are being fetched from Tebra; try again shortly.",
            headers={"Retry-After": "5"},
        )
    return success(cached.providers, stale=not cached.fresh, fetched_at=cached.fetched_at)


def _while_breaker_open(cached: cache.CachedProviders | None, breaker: Glance) -> Response:
    """Tebra is not being called: serve the last list flagged stale (no refresh queued), or 503."""
    retry = "60" if breaker.retry_in_s is None else str(max(1, math.ceil(breaker.retry_in_s)))
    if cached is None:
        raise ApiError(
            "CIRCUIT_OPEN",
            "Tebra is unavailable (circuit open) and no providers are cached yet.",
            details={"breaker": breaker.state, "reason": breaker.reason or None},
            headers={"Retry-After": retry},
        )
    return success(cached.providers, stale=True, fetched_at=cached.fetched_at, breaker=breaker.state)
