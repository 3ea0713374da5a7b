"""The worker's per-process collaborators, built on first use and rebuilt after a fork.

Celery's prefork pool forks children from a parent that may already hold sockets; a child must never share
the parent's Redis connections or zeep session. ``get_runtime`` keys its cache by pid, and
workers/signals.py also drops it on ``worker_process_init``.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import redis

from config import Settings
from tasks import events, keys, metrics
from tasks.breaker.errors import BreakerOpen
from tasks.breaker.guard import BreakerEvents, TebraBreaker
from tasks.breaker.store import BreakerStore
from tasks.clients import Clients
from tasks.connections import get_redis, reset_redis
from tasks.sync import clock
from tasks.sync.reconcile import Reconciler
from tasks.sync.run import SyncContext
from tasks.sync.watch import WatchContext
from tasks.tebra import client as tebra_client
from tasks.tebra.credentials import CredentialsGuard, with_credentials
from tasks.tebra.errors import TebraError
from tasks.tebra.gateway import TebraGateway

log = logging.getLogger(__name__)


@dataclass
class Runtime(Clients):
    """Everything a task needs, for one process."""

    sender: ClassVar[str] = "worker"

    def make_redis(self) -> redis.Redis:
        return get_redis(self.settings)  # one pool per process, dropped after a fork

    @cached_property
    def breaker(self) -> TebraBreaker:
        """The Tebra breaker: this process's view of the one state in Redis (reads it when first built)."""
        store = BreakerStore.from_settings(self.redis, self.settings)
        return TebraBreaker(store, listeners=[BreakerEvents(lambda: self.publisher)])

    @cached_property
    def credentials(self) -> CredentialsGuard:
        """The credentials latch as this process honours it (tasks/credentials_latch.py)."""
        return CredentialsGuard(self.redis, self.settings, self._use_credentials, lambda: self.publisher)

    def _use_credentials(self, fresh: Settings) -> None:
        self.gateway.use_credentials(fresh.tebra_user, fresh.tebra_password, fresh.tebra_customer_key)

    def _guard_tebra_call(self, operation: str) -> None:
        # Built on the first call, not with the gateway: no Redis I/O before a task runs. The latch first:
        # while Tebra refuses our credentials no call goes out, whatever the breaker says.
        self.credentials.check(operation)
        try:
            self.breaker.guard(operation)
        except BaseException:
            self.credentials.abandon()
            raise

    def _observe_tebra_call(self, operation: str, seconds: float, outcome: str) -> None:
        metrics.observe_tebra_call(operation, seconds, outcome)
        self.credentials.settle(outcome)
        self.breaker.record(operation, seconds, outcome)
        if outcome == "ok" and operation != "GetThrottles":
            self._refresh_throttles()

    def _refresh_throttles(self) -> None:
        """Every TEBRA_THROTTLES_REFRESH_MINUTES, one process (the first to claim it after a good call) reads
        the account's live limits (GetThrottles) for every process's throttle. After a good call, not before
        one: the credentials are proven then. The task whose call it follows pays one GetThrottles."""
        minutes = self.settings.tebra_throttles_refresh_minutes
        if minutes <= 0:
            return
        try:
            if not self.redis.set(keys.THROTTLES_REFRESHED, events.utc_now_iso(), nx=True, ex=minutes * 60):
                return
            self.gateway.refresh_throttles()
        except (TebraError, BreakerOpen, redis.RedisError) as exc:
            # Pacing goes on with the values stored last (or the published ones); tried again next period.
            log.warning("tebra throttles not refreshed", extra={"error": type(exc).__name__})

    @cached_property
    def gateway(self) -> TebraGateway:
        # Every call passes the shared breaker first; latency and outcome go to the metrics and the breaker.
        return TebraGateway(
            with_credentials(self.settings),
            self.redis,
            before_call=self._guard_tebra_call,
            on_call=self._observe_tebra_call,
            on_wait=metrics.observe_throttle_wait,
            on_unknown=metrics.observe_unknown_member,
            on_refused=lambda error: self.credentials.refused(error),
        )

    @cached_property
    def reconciler(self) -> Reconciler:
        return Reconciler(self.redis, self.store, sender=self.sender, maxlen=self.settings.stream_maxlen)

    def sync_context(self) -> SyncContext:
        return SyncContext(
            redis=self.redis,
            store=self.store,
            reconciler=self.reconciler,
            publisher=self.publisher,
            source=self.gateway,
            clinic_tz=self.clinic_tz,
            status_ttl_s=self.settings.retention_days * 86400,
            results_maxlen=self.settings.stream_maxlen,
            lock_ttl_s=self.settings.sync_lock_ttl_s,
            providers=self.gateway,
            providers_ttl_s=self.settings.providers_cache_ttl_s,
            coalesce_days=self.settings.sync_coalesce_days,
            full_sync_max_age_s=self.settings.full_reconcile_minutes * 60,
            modified_overlap_s=self.settings.tebra_modified_overlap_s,
            clock_allowance_s=self._clock_allowance_s,
            empty_confirm_s=self.settings.empty_confirm_minutes * 60,
            details_enabled=self.settings.patient_details_enabled,
        )

    def _clock_allowance_s(self) -> float:
        """Tebra's measured clock lag (0 while unmeasured): what an incremental day sync widens by."""
        return clock.read(self.redis).allowance_s or 0.0

    def watch_context(self) -> WatchContext:
        return WatchContext(
            redis=self.redis,
            reconciler=self.reconciler,
            publisher=self.publisher,
            source=self.gateway,
            settings=self.settings,
        )


_lock = threading.Lock()
_runtime: Runtime | None = None
_runtime_pid: int | None = None


def get_runtime(settings: Settings) -> Runtime:
    """This process's runtime (a forked child builds its own)."""
    global _runtime, _runtime_pid
    with _lock:
        if _runtime is None or _runtime_pid != os.getpid() or _runtime.settings is not settings:
            _runtime = Runtime(settings)
            _runtime_pid = os.getpid()
        return _runtime


def reset_runtime() -> None:
    """Drop this process's clients (after fork, or when a test changes the settings)."""
    global _runtime, _runtime_pid
    with _lock:
        _runtime, _runtime_pid = None, None
    reset_redis()
    tebra_client.reset()
