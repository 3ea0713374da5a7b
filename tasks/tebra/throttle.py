"""A throttle shared through Redis that paces each Tebra operation across every worker process.

Tebra limits calls per account and per operation (docs/tebra.md, "Tebra's API as it behaves"). Each acquire
runs one Lua script that
reserves the operation's next slot, ``slot = max(now, last_slot + interval)``, and answers how long the
caller must sleep until it. ``now`` is the Redis server's TIME, so processes with drifting clocks still
agree. The interval is Tebra's published one, or the live value from GetThrottles when it has been stored
in ``keys.throttle_intervals()``, times ``1 + TEBRA_THROTTLE_MARGIN``, plus ``TEBRA_THROTTLE_MARGIN_MS``
(250 ms by default): live clients saw 429s at exactly the published interval, and a proportional margin
alone is only 80 ms on a 1 s operation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from config.settings import Settings
from tasks import keys

# Tebra's published minimum gap between two calls of one operation, in ms (docs/tebra.md, "Rate limits").
# Keyed by the WSDL's operation names (a unit test checks them; the guide's SearchPatient is not one).
PUBLISHED_INTERVALS_MS: dict[str, int] = {
    "GetPatient": 250,
    "GetAppointment": 500,
    "GetEncounterDetails": 500,
    "GetPractices": 500,
    "GetProcedureCodes": 500,
    "GetProviders": 500,
    "GetServiceLocations": 500,
    "CreateAppointment": 500,
    "CreateEncounter": 500,
    "CreatePatient": 500,
    "CreatePayment": 500,
    "UpdateAppointment": 500,
    "UpdateEncounterStatus": 500,
    "DeleteAppointment": 500,
    "GetAppointments": 1000,
    "GetCharges": 1000,
    "GetExternalVendors": 1000,
    "GetPatients": 1000,
    "GetPayments": 1000,
    "GetTransactions": 1000,
    "UpdatePatient": 1000,
    "GetAllPatients": 5000,
    "GetThrottles": 5000,
}
DEFAULT_INTERVAL_MS = 1000  # an operation the guide does not list: pace it like the list reads
LIVE_INTERVALS_TTL_S = 86400  # GetThrottles values are "subject to change": re-read them daily

# KEYS[1] the operation's slot key, KEYS[2] the hash of live intervals.
# ARGV[1] operation, ARGV[2] published interval (ms), ARGV[3] margin, ARGV[4] absolute margin (ms).
# Returns {slot_us, wait_us, interval_us}: the reserved slot and the wait, both on the server's clock.
_RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval_ms = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or ARGV[2])
local interval = math.floor((interval_ms * (1 + tonumber(ARGV[3])) + tonumber(ARGV[4])) * 1000)
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(now, last + interval)
local ttl_ms = math.ceil((slot - now + interval) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%d', slot), 'PX', ttl_ms)
return {slot, slot - now, interval}
"""

# KEYS[1] the slot key; ARGV[1] a fallback TTL (ms). Marks "a call just happened" unless a later slot is
# already reserved, so the next acquire waits a full interval from now.
_MARK_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if now > last then
  redis.call('SET', KEYS[1], string.format('%d', now), 'PX', tonumber(ARGV[1]))
end
return 0
"""


@dataclass(frozen=True)
class Reservation:
    """One reserved slot: when (Redis server time, µs), how long the caller waits, the interval used."""

    operation: str
    slot_us: int
    wait_s: float
    interval_s: float


class TebraThrottle:
    """Paces Tebra operations across processes; :meth:`acquire` blocks until the caller's slot."""

    def __init__(
        self,
        redis: Any,
        *,
        margin: float = 0.0,
        margin_ms: int = 0,
        enabled: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._redis = redis
        self._margin = margin
        self._margin_ms = margin_ms
        self._enabled = enabled
        self._sleep = sleep
        self._reserve = redis.register_script(_RESERVE_LUA)
        self._mark = redis.register_script(_MARK_LUA)

    @classmethod
    def from_settings(cls, redis: Any, settings: Settings) -> TebraThrottle:
        """A throttle with the project's margin and on/off switch."""
        return cls(
            redis,
            margin=settings.tebra_throttle_margin,
            margin_ms=settings.tebra_throttle_margin_ms,
            enabled=settings.tebra_throttle_enabled,
        )

    @property
    def enabled(self) -> bool:
        return self._enabled

    def reserve(self, operation: str) -> Reservation:
        """Reserve the operation's next slot without sleeping."""
        published = PUBLISHED_INTERVALS_MS.get(operation, DEFAULT_INTERVAL_MS)
        slot_us, wait_us, interval_us = self._reserve(
            keys=[keys.throttle(operation), keys.throttle_intervals()],
            args=[operation, published, repr(float(self._margin)), int(self._margin_ms)],
        )
        return Reservation(operation, int(slot_us), int(wait_us) / 1e6, int(interval_us) / 1e6)

    def acquire(self, operation: str) -> float:
        """Wait for this process's turn to call ``operation``; returns the seconds waited (0 when off)."""
        if not self._enabled:
            return 0.0
        reservation = self.reserve(operation)
        if reservation.wait_s > 0:
            self._sleep(reservation.wait_s)
        return reservation.wait_s

    def mark_called(self, operation: str) -> None:
        """Record a call at the server's now: after Tebra throttles us, the next caller waits an interval."""
        if not self._enabled:
            return
        published = PUBLISHED_INTERVALS_MS.get(operation, DEFAULT_INTERVAL_MS)
        ttl_ms = 2 * (published * (1 + self._margin) + self._margin_ms) + 1000
        self._mark(keys=[keys.throttle(operation)], args=[int(ttl_ms)])

    def store_intervals(self, intervals: Mapping[str, int]) -> None:
        """Store live intervals (ms per operation, from GetThrottles) for every process to pace by."""
        if not intervals:
            return
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(keys.throttle_intervals())
        pipe.hset(keys.throttle_intervals(), mapping={op: int(ms) for op, ms in intervals.items()})
        pipe.expire(keys.throttle_intervals(), LIVE_INTERVALS_TTL_S)
        pipe.execute()

    def intervals(self) -> dict[str, int]:
        """The live intervals currently stored (empty when none were read)."""
        raw = self._redis.hgetall(keys.throttle_intervals())
        return {_text(k): int(float(_text(v))) for k, v in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
