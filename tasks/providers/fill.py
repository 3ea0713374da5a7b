"""A day's rows with no provider, filled from the practice's providers (``cache:providers``, refreshed from
Tebra when missing or stale, at most one process at a time): a sync calls it for the rows it read."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import redis

from tasks.providers import cache
from tasks.tebra.errors import TebraError

log = logging.getLogger(__name__)


class ProviderSource(Protocol):
    """Where a sync gets the practice's providers when ``cache:providers`` is missing or stale."""

    def get_providers(self) -> list[dict[str, Any]]: ...


class Filling(Protocol):
    """What filling needs: Redis, where to get the list (None: the cache only), how long it stays fresh."""

    @property
    def redis(self) -> redis.Redis: ...
    @property
    def providers(self) -> ProviderSource | None: ...
    @property
    def providers_ttl_s(self) -> int: ...


def fill_providers(ctx: Filling, appointments: Sequence[dict[str, Any]]) -> bool | None:
    """Fill provider ids and names missing from rows from the day's providers; returns whether the list used
    was stale (None: no row needed it, so neither the cache nor Tebra was asked).

    Cheap by construction: one GET of ``cache:providers`` only when a row lacks a provider id or name, and
    one GetProviders (its own 500 ms throttle slot, never GetAppointments') only when that cache is missing
    or older than an hour and no other process is already refreshing it. Tebra being down leaves the sync
    with the stale list, flagged.
    """
    needy = [a for a in appointments if not (a.get("provider_id") and a.get("provider_name"))]
    if not needy:
        return None
    providers, stale = _day_providers(ctx)
    by_id = {str(p["id"]): p for p in providers}
    by_name = {str(p.get("full_name") or "").casefold(): p for p in providers if p.get("full_name")}
    for appointment in needy:
        found = by_id.get(str(appointment.get("provider_id") or "")) or by_name.get(
            str(appointment.get("provider_name") or "").casefold()
        )
        if found is not None:
            appointment["provider_id"] = appointment.get("provider_id") or str(found["id"])
            appointment["provider_name"] = appointment.get("provider_name") or found.get("full_name")
    return stale


def _day_providers(ctx: Filling) -> tuple[list[dict[str, Any]], bool]:
    cached = cache.read(ctx.redis)
    if cached is not None and cached.fresh:
        return cached.providers, False
    if ctx.providers is not None and cache.claim_refresh(ctx.redis):
        try:
            providers = ctx.providers.get_providers()
        except TebraError as exc:
            log.warning("providers not refreshed, using the cached list", extra={"code": exc.outcome})
        else:
            cache.write(ctx.redis, providers, ctx.providers_ttl_s)
            return providers, False
    return (cached.providers if cached else []), True
