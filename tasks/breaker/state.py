"""The breaker's vocabulary: states, reasons, the Redis keys it is held in, and the rules' numbers.

``cb:tebra`` (hash) holds ``state`` (closed | open | half), ``reason`` (errors | latency | forced),
``opened_at``, ``open_until``, ``last_fail``, ``changed_at`` (unix seconds) and ``trips``; ``cb:force_open``
(string) is the operator's override. Beside them, named from ``cb:tebra``:

- ``cb:tebra:failures`` sorted set of upstream failure times (the sliding window of rule 1);
- ``cb:tebra:latency`` sorted set of call latencies by time (the p95 window of rule 2);
- ``cb:tebra:trial`` the half-open trial lock (SET NX PX: one trial call at a time across processes);
- ``cb:tebra:sample`` the shared counter that admits 1 call in N while half-open for latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from config import Settings
from tasks import keys

CLOSED = "closed"
OPEN = "open"
HALF = "half"
UNKNOWN = "unknown"  # Redis cannot be read: never reported as closed

REASON_ERRORS = "errors"
REASON_FORCED = "forced"

STATE = keys.BREAKER
FORCE_OPEN = keys.BREAKER_FORCE_OPEN
FAILURES = f"{keys.BREAKER}:failures"
LATENCY = f"{keys.BREAKER}:latency"
TRIAL = f"{keys.BREAKER}:trial"
SAMPLE = f"{keys.BREAKER}:sample"
ALL_KEYS = (STATE, FORCE_OPEN, FAILURES, LATENCY, TRIAL, SAMPLE)

MAX_LATENCY_SAMPLES = 5000  # bounds the p95 sort; two minutes of Tebra's paced calls stay far below it
# The trial lock outlives the longest call (connect + operation timeouts) by this much, so a dead trial
# frees it.
TRIAL_TTL_MARGIN_S = 5.0


@dataclass(frozen=True)
class BreakerConfig:
    """The rules' numbers. Their defaults live in one place, the settings (``BREAKER_*``):
    build one with :meth:`from_settings`."""

    failure_threshold: int
    window_s: float
    open_s: float
    latency_p95_s: float
    latency_window_s: float
    sample_every: int
    latency_min_samples: int
    half_retry_s: float
    trial_ttl_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerConfig:
        longest_call_s = settings.tebra_connect_timeout_s + settings.tebra_operation_timeout_s
        return cls(
            failure_threshold=settings.breaker_failure_threshold,
            window_s=settings.breaker_window_s,
            open_s=settings.breaker_open_s,
            latency_p95_s=settings.breaker_latency_p95_s,
            latency_window_s=settings.breaker_latency_window_s,
            sample_every=settings.breaker_sample_every,
            latency_min_samples=settings.breaker_latency_min_samples,
            half_retry_s=settings.breaker_half_retry_s,
            trial_ttl_s=longest_call_s + TRIAL_TTL_MARGIN_S,
        )

    def args(self) -> list[Any]:
        """The ARGV prefix every script reads (tasks/breaker/scripts.py, its prelude)."""
        return [
            self.failure_threshold,
            self.window_s,
            self.open_s,
            self.latency_p95_s,
            self.latency_window_s,
            self.sample_every,
            self.latency_min_samples,
            max(1, round(self.trial_ttl_s * 1000)),
            max(1, round(self.half_retry_s * 1000)),
            MAX_LATENCY_SAMPLES,
        ]


def as_text(value: Any) -> str:
    """A Redis reply (bytes, str or None) as text; None is empty."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def as_float(value: Any) -> float | None:
    """A stored number, or None when it is missing or unreadable."""
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
