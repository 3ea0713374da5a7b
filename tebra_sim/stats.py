"""Counters a test reads from ``GET /_sim/stats`` to see what the client really did on the wire."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict, deque
from typing import Any

KEEP_TIMESTAMPS = 1000  # per operation: enough for any rate test, bounded for a long dev session


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._calls: Counter[str] = Counter()
            self._accepted: Counter[str] = Counter()
            self._throttled: Counter[str] = Counter()
            self._faults: Counter[str] = Counter()
            self._security_failures: Counter[str] = Counter()
            self._accepted_at: defaultdict[str, deque[float]] = defaultdict(
                lambda: deque(maxlen=KEEP_TIMESTAMPS)
            )

    def call(self, operation: str) -> None:
        with self._lock:
            self._calls[operation] += 1

    def accepted(self, operation: str) -> None:
        with self._lock:
            self._accepted[operation] += 1
            self._accepted_at[operation].append(time.time())

    def throttled(self, operation: str) -> None:
        with self._lock:
            self._throttled[operation] += 1

    def fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    def security_failure(self, operation: str) -> None:
        with self._lock:
            self._security_failures[operation] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": dict(self._calls),
                "accepted": dict(self._accepted),
                "throttled": dict(self._throttled),
                "throttle_violations": sum(self._throttled.values()),
                "faults": dict(self._faults),
                "faults_served": sum(self._faults.values()),
                "security_failures": dict(self._security_failures),
                # Unix seconds of each accepted call, oldest first: the gaps show the client's real pacing.
                "accepted_at": {op: list(times) for op, times in self._accepted_at.items()},
            }
