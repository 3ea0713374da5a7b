"""The breaker's state read cheaply (two reads, no script): enough for a request path to decide.

The API's providers route reads it to serve a stale list instead of queueing work a refused breaker would
only defer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from tasks.breaker.state import CLOSED, FORCE_OPEN, OPEN, REASON_FORCED, STATE, as_float, as_text


@dataclass(frozen=True)
class Glance:
    """Open, half or closed, and how long until it tries again."""

    state: str
    reason: str
    retry_in_s: float | None  # None: forced open, until cleared

    @property
    def is_open(self) -> bool:
        return self.state == OPEN


def glance(client: redis.Redis) -> Glance:
    """Open, half or closed, and how long until it tries again (raises redis errors: the caller decides)."""
    pipe = client.pipeline(transaction=False)
    pipe.hmget(STATE, ["state", "reason", "open_until"])
    pipe.exists(FORCE_OPEN)
    (state, reason, open_until), forced = pipe.execute()
    if forced:
        return Glance(OPEN, REASON_FORCED, None)
    state, reason = as_text(state) or CLOSED, as_text(reason)
    until = as_float(open_until)
    if state != OPEN:
        return Glance(state, reason, 0.0)
    if until is None:
        return Glance(state, reason, None if reason == REASON_FORCED else 0.0)
    return Glance(state, reason, max(0.0, until - time.time()))
