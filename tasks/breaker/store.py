"""The breaker's scripts over one Redis client: admit a call, record its outcome, force, clear, read.

Free of pybreaker and zeep, so the API can read and steer the breaker (its ops routes) with the same
scripts the workers' guard (tasks/breaker/guard.py) runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from config import Settings
from tasks import events
from tasks.breaker import scripts
from tasks.breaker.state import (
    ALL_KEYS,
    CLOSED,
    HALF,
    OPEN,
    REASON_FORCED,
    UNKNOWN,
    BreakerConfig,
    as_float,
    as_text,
)
from tasks.breaker.transition import Transition


@dataclass(frozen=True)
class Admission:
    """May this call go to Tebra? ``role``: normal | trial | sample; ``retry_after_s`` None: until cleared."""

    admitted: bool
    state: str
    reason: str
    retry_after_s: float | None
    role: str
    transition: Transition | None


@dataclass(frozen=True)
class Recorded:
    """The state after one call's outcome was counted."""

    state: str
    reason: str
    failures: int
    p95_s: float | None
    transition: Transition | None


class BreakerStore:
    """The scripts over one Redis client: admit a call, record its outcome, force, clear, read."""

    def __init__(self, client: redis.Redis, config: BreakerConfig) -> None:
        self.client = client
        self.config = config
        self._admit = client.register_script(scripts.ADMIT)
        self._record = client.register_script(scripts.RECORD)
        self._control = client.register_script(scripts.CONTROL)
        self._snapshot = client.register_script(scripts.SNAPSHOT)

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> BreakerStore:
        return cls(client, BreakerConfig.from_settings(settings))

    def _run(self, script: Any, *args: Any) -> Any:
        return script(keys=list(ALL_KEYS), args=[*self.config.args(), *args])

    def admit(self, token: str) -> Admission:
        """Decide one call (raises redis errors: the caller decides what an unreadable breaker means)."""
        admitted, state, reason, retry_ms, role, transition = self._run(self._admit, token)
        retry_ms = int(retry_ms)
        return Admission(
            admitted=bool(int(admitted)),
            state=as_text(state),
            reason=as_text(reason),
            retry_after_s=None if retry_ms < 0 else retry_ms / 1000.0,
            role=as_text(role),
            transition=Transition.parse(as_text(transition), as_text(reason)),
        )

    def record(self, token: str, *, failed: bool, seconds: float) -> Recorded:
        """Count one finished call: its latency always, a failure when ``failed`` (upstream only)."""
        state, reason, transition, failures, p95 = self._run(
            self._record, token, "1" if failed else "0", f"{max(0.0, seconds):.6f}"
        )
        return Recorded(
            state=as_text(state),
            reason=as_text(reason),
            failures=int(failures),
            p95_s=float(p95) if p95 else None,
            transition=Transition.parse(as_text(transition), as_text(reason)),
        )

    def force_open(self, by: str = "ops") -> Transition | None:
        """Hold it open until :meth:`clear` (sets ``cb:force_open``)."""
        marker = json.dumps({"at": events.utc_now_iso(), "by": by}, sort_keys=True)
        return Transition.parse(as_text(self._run(self._control, "force", OPEN, marker)), REASON_FORCED)

    def clear(self) -> Transition | None:
        """Drop the override and every count: closed, with a fresh window."""
        return Transition.parse(as_text(self._run(self._control, "clear", CLOSED, "")), "")

    def set_state(self, state: str, reason: str) -> Transition | None:
        """Move to ``state`` unless forced open (pybreaker's open()/half_open()/close() land here)."""
        return Transition.parse(as_text(self._run(self._control, "set", state, reason)), reason)

    def snapshot(self) -> dict[str, Any]:
        """What an operator sees: state, counts, p95 and when it next lets a call through."""
        raw = json.loads(self._run(self._snapshot))
        return describe(raw, self.config)


def describe(raw: dict[str, Any], config: BreakerConfig) -> dict[str, Any]:
    """The snapshot script's fields as the JSON GET /api/v1/ops/breaker answers."""
    state, reason = raw.get("state") or CLOSED, raw.get("reason") or ""
    now = float(raw["now"])
    open_until = as_float(raw.get("open_until"))
    forced = raw.get("forced") or ""
    if state == OPEN and reason == REASON_FORCED:
        next_try_at, retry_in_s = None, None  # until an operator clears it
    elif state == OPEN:
        next_try_at = open_until if open_until is not None else now
        retry_in_s = max(0.0, next_try_at - now)
    elif state == HALF:
        next_try_at, retry_in_s = now, 0.0
    else:
        next_try_at, retry_in_s = None, 0.0
    p95 = as_float(raw.get("p95_s"))
    return {
        "state": state,
        "reason": reason or None,
        "forced": json.loads(forced) if forced.startswith("{") else bool(forced),
        "opened_at": _iso(as_float(raw.get("opened_at"))),
        "last_fail": _iso(as_float(raw.get("last_fail"))),
        "changed_at": _iso(as_float(raw.get("changed_at"))),
        "next_try_at": _iso(next_try_at),
        "retry_in_s": None if retry_in_s is None else round(retry_in_s, 3),
        "trips": int(raw.get("trips") or 0),
        "trial_in_progress": bool(int(raw.get("trial_in_progress") or 0)),
        "failures": {
            "in_window": int(raw.get("failures") or 0),
            "threshold": config.failure_threshold,
            "window_s": config.window_s,
        },
        "latency": {
            "p95_s": p95,
            "samples": int(raw.get("samples") or 0),
            "threshold_s": config.latency_p95_s,
            "window_s": config.latency_window_s,
            "min_samples": config.latency_min_samples,
        },
        "sampling": {"admit_one_in": config.sample_every, "counter": int(raw.get("sample_counter") or 0)},
        "open_s": config.open_s,
    }


def unknown_state(error: BaseException) -> dict[str, Any]:
    """What the breaker reports when Redis cannot be read: ``unknown``, never ``closed``."""
    return {"state": UNKNOWN, "reason": "redis_unavailable", "error": type(error).__name__}


def _iso(seconds: float | None) -> str | None:
    if seconds is None or math.isnan(seconds):
        return None
    stamp = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")
