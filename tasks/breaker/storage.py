"""pybreaker's storage interface over the breaker's Redis state (tasks/breaker/store.py).

Unlike pybreaker's own ``CircuitRedisStorage`` it never falls back to "closed" when Redis fails: it raises
:class:`~tasks.breaker.errors.BreakerUnavailable`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pybreaker
import redis

from tasks.breaker.errors import BreakerUnavailable
from tasks.breaker.state import CLOSED, HALF, OPEN, REASON_ERRORS, UNKNOWN
from tasks.breaker.store import BreakerStore

UNAVAILABLE_RETRY_S = 5.0  # a task refused because Redis is down tries again after this

# pybreaker spells half-open "half-open"; the seed's key says "half".
TO_PYBREAKER = {CLOSED: pybreaker.STATE_CLOSED, OPEN: pybreaker.STATE_OPEN, HALF: pybreaker.STATE_HALF_OPEN}
_FROM_PYBREAKER = {value: key for key, value in TO_PYBREAKER.items()}


class RedisBreakerStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker's storage interface over ``cb:tebra``; raises :class:`BreakerUnavailable` when Redis fails.

    The counters are the sliding window, so pybreaker's ``reset_counter`` (called after every success) is
    a no-op: a success does not forgive the failures of the last 60 s. The scripts reset the window when
    the breaker closes.
    """

    def __init__(self, store: BreakerStore) -> None:
        super().__init__("redis")
        self.store = store

    def _snapshot(self) -> dict[str, Any]:
        try:
            return self.store.snapshot()
        except redis.RedisError as exc:
            raise BreakerUnavailable(
                f"breaker state unreadable: {type(exc).__name__}",
                state=UNKNOWN,
                retry_after_s=UNAVAILABLE_RETRY_S,
            ) from None

    @property
    def state(self) -> str:
        return TO_PYBREAKER[self._snapshot()["state"]]

    @state.setter
    def state(self, state: str) -> None:
        target = _FROM_PYBREAKER[state]
        reason = REASON_ERRORS if target != CLOSED else ""
        try:
            self.store.set_state(target, reason)
        except redis.RedisError as exc:
            raise BreakerUnavailable(f"breaker state not written: {type(exc).__name__}") from None

    def increment_counter(self) -> None:
        self.store.record(uuid.uuid4().hex, failed=True, seconds=0.0)

    def reset_counter(self) -> None:
        """No-op: the window forgets failures, not successes."""

    def increment_success_counter(self) -> None:
        """No-op: one success (the trial) closes the breaker, inside the record script."""

    def reset_success_counter(self) -> None:
        """No-op (see increment_success_counter)."""

    @property
    def counter(self) -> int:
        return int(self._snapshot()["failures"]["in_window"])

    @property
    def success_counter(self) -> int:
        return 0

    @property
    def opened_at(self) -> datetime | None:
        stamp = self._snapshot()["opened_at"]
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC) if stamp else None

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        """Set by the script that opens the breaker (Redis's clock, not this host's)."""
