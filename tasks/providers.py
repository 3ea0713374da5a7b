"""Celery task shell: refresh ``cache:providers`` from Tebra."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from tasks import provider_cache
from tasks.breaker.errors import BreakerOpen
from tasks.runtime import get_runtime
from tasks.schedule import task_settings
from tasks.tebra.errors import TebraThrottled, TebraUpstreamError

REFRESH_TASK = "providers.refresh"


@shared_task(name=REFRESH_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=5)
def refresh_providers(self: Task) -> dict[str, Any]:
    """Fetch the providers and cache them for PROVIDERS_CACHE_TTL_S; returns the count."""
    settings = task_settings(self)
    runtime = get_runtime(settings)
    try:
        providers = runtime.gateway.get_providers()
    except BreakerOpen as exc:
        # Not a failure and no retry budget spent. Forced open: the API asks again once it is cleared.
        if exc.retry_after_s is None:
            return {"providers": None, "deferred": True}
        raise self.retry(exc=exc, countdown=exc.retry_after_s + 0.25, max_retries=None) from None
    except (TebraThrottled, TebraUpstreamError) as exc:
        raise self.retry(exc=exc, countdown=2 ** (self.request.retries + 1)) from None
    provider_cache.write(runtime.redis, providers, settings.providers_cache_ttl_s)
    return {"providers": len(providers)}
