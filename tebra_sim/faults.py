"""Failure switches that tests flip at run time through ``POST /_sim/faults`` (docs/simulator.md).

One lock guards every switch: the server is threaded, and "the next N calls" must be counted exactly once
each.
"""

from __future__ import annotations

import copy
import math
import random
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

THROTTLE_SHAPES = ("error_response", "http_429", "out_of_order")
SECURITY_MODES = (None, "bad_password", "bad_customer_key", "permissions_missing", "user_not_found")
PLACEHOLDER_MODES = ("off", "empty_result", "toggles", "always")
# z for the 95th percentile of a normal distribution: sigma of a lognormal from its median and p95.
_Z95 = 1.6448536269514722


class FaultError(ValueError):
    """A switch the simulator does not know, or a value it cannot use."""


@dataclass
class CountedFault:
    """A fault for the next ``remaining`` calls (None: every call), maybe for some operations only."""

    remaining: int | None = None
    operations: list[str] | None = None

    def matches(self, operation: str) -> bool:
        return self.operations is None or operation in self.operations


@dataclass
class Switches:
    throttle: bool = True
    throttle_shape: str = "error_response"
    security: str | None = None
    placeholder_row: str = "off"
    max_range_days: int = 60
    latency_ms: int = 0
    latency_distribution: dict[str, float] | None = None  # {"median_ms": …, "p95_ms": …}, lognormal
    slow_until: float | None = None  # time.time() until which every call is delayed by slow_delay_ms
    slow_delay_ms: int = 0
    internal_fault: CountedFault | None = None
    # IsError=true with the null-Filter .NET message (docs/tebra.md)
    business_error: CountedFault | None = None
    hang: CountedFault | None = None
    hang_seconds: float = 0.0
    # LastModifiedDate and CreatedDate stamped as wall time in this zone instead of the practice's (None):
    # Tebra's stamp zone is undocumented; a server in another zone skews them (docs/simulator.md).
    stamp_tz: str | None = None
    maintenance: CountedFault | None = None  # HTTP 503 with an HTML maintenance page
    truncated: CountedFault | None = None  # the reply cut off halfway
    connection_reset: CountedFault | None = None  # the connection dropped, no reply at all
    unknown_member: bool = False  # GetProviders/GetPatient rows carry a member the WSDL does not declare
    wsdl_unavailable: bool = False  # GET ?wsdl answers 503 with an HTML page
    unreadable_dates: list[int] | None = None  # these appointments' LastModifiedDate is in no date form


@dataclass
class Decision:
    """What the switches say about one SOAP call, drawn once when it arrives."""

    internal_fault: bool = False
    business_error: bool = False
    hang_seconds: float = 0.0
    delay_ms: float = 0.0
    maintenance: bool = False
    truncated: bool = False
    connection_reset: bool = False


class Faults:
    def __init__(self, throttle: bool = True, latency_ms: int = 0, max_range_days: int = 60) -> None:
        self._defaults = Switches(throttle=throttle, latency_ms=latency_ms, max_range_days=max_range_days)
        self._lock = threading.Lock()
        self._switches = copy.deepcopy(self._defaults)
        self._rng = random.Random()

    def reset(self) -> None:
        with self._lock:
            self._switches = copy.deepcopy(self._defaults)

    @property
    def switches(self) -> Switches:
        """A snapshot: read freely, it does not change under the caller."""
        with self._lock:
            return copy.deepcopy(self._switches)

    def update(self, body: dict[str, Any]) -> dict[str, Any]:
        """Apply the given switches (others keep their value); answer the whole state."""
        with self._lock:
            # All or nothing: a bad switch leaves the previous state untouched.
            candidate = copy.deepcopy(self._switches)
            for key, value in body.items():
                _apply(candidate, key, value)
            self._switches = candidate
        return self.describe()

    def describe(self) -> dict[str, Any]:
        state = asdict(self.switches)
        slow_until = state.pop("slow_until")
        state["slow_remaining_s"] = max(0.0, slow_until - time.time()) if slow_until else 0.0
        return state

    def decide(self, operation: str) -> Decision:
        """Draw this call's latency and consume one count of any counted fault that applies."""
        decision = Decision()
        with self._lock:
            s = self._switches
            decision.internal_fault = _consume(s.internal_fault, operation)
            decision.business_error = _consume(s.business_error, operation)
            decision.maintenance = _consume(s.maintenance, operation)
            decision.truncated = _consume(s.truncated, operation)
            decision.connection_reset = _consume(s.connection_reset, operation)
            if _consume(s.hang, operation):
                decision.hang_seconds = s.hang_seconds
            delay = float(s.latency_ms)
            if s.latency_distribution:
                median = s.latency_distribution["median_ms"]
                p95 = s.latency_distribution["p95_ms"]
                sigma = math.log(p95 / median) / _Z95 if p95 > median > 0 else 0.0
                delay += self._rng.lognormvariate(math.log(median), sigma) if median > 0 else 0.0
            if s.slow_until is not None and time.time() < s.slow_until:
                delay += s.slow_delay_ms
            decision.delay_ms = delay
        return decision


def _consume(fault: CountedFault | None, operation: str) -> bool:
    if fault is None or not fault.matches(operation):
        return False
    if fault.remaining is None:
        return True
    if fault.remaining <= 0:
        return False
    fault.remaining -= 1
    return True


def _counted(value: Any) -> CountedFault | None:
    """``null``/false: off; ``true``/``"always"``: every call; ``{"count": N, "operations": [...]}``."""
    if value in (None, False, 0):
        return None
    if value is True or value == "always":
        return CountedFault()
    if isinstance(value, int):
        return CountedFault(remaining=value)
    if isinstance(value, dict):
        count = value.get("count")
        operations = value.get("operations")
        if count is not None and (not isinstance(count, int) or count < 0):
            raise FaultError("count must be a non-negative integer or null (always)")
        if operations is not None and not (
            isinstance(operations, list) and all(isinstance(op, str) for op in operations)
        ):
            raise FaultError("operations must be a list of operation names")
        return CountedFault(remaining=count, operations=operations)
    raise FaultError(f"not a fault switch: {value!r}")


def _apply(s: Switches, key: str, value: Any) -> None:
    if key == "throttle":
        s.throttle = bool(value)
    elif key == "throttle_shape":
        if value not in THROTTLE_SHAPES:
            raise FaultError(f"throttle_shape must be one of {THROTTLE_SHAPES}")
        s.throttle_shape = value
    elif key == "security":
        if value not in SECURITY_MODES:
            raise FaultError(f"security must be one of {SECURITY_MODES}")
        s.security = value
    elif key == "placeholder_row":
        if value not in PLACEHOLDER_MODES:
            raise FaultError(f"placeholder_row must be one of {PLACEHOLDER_MODES}")
        s.placeholder_row = value
    elif key == "max_range_days":
        s.max_range_days = int(value)
    elif key == "latency_ms":
        s.latency_ms = max(0, int(value))
    elif key == "latency_distribution":
        if value is not None and not (isinstance(value, dict) and {"median_ms", "p95_ms"} <= value.keys()):
            raise FaultError("latency_distribution needs median_ms and p95_ms (or null)")
        s.latency_distribution = (
            None if value is None else {k: float(value[k]) for k in ("median_ms", "p95_ms")}
        )
    elif key == "slow":
        # {"seconds": N, "delay_ms": M}: every call in the next N seconds takes M ms longer.
        if value is None:
            s.slow_until, s.slow_delay_ms = None, 0
        else:
            s.slow_until = time.time() + float(value["seconds"])
            s.slow_delay_ms = int(value["delay_ms"])
    elif key == "internal_fault":
        s.internal_fault = _counted(value)
    elif key == "business_error":
        s.business_error = _counted(value)
    elif key in ("maintenance", "truncated", "connection_reset"):
        setattr(s, key, _counted(value))
    elif key in ("unknown_member", "wsdl_unavailable"):
        setattr(s, key, bool(value))
    elif key == "unreadable_dates":
        if value is not None and not (isinstance(value, list) and all(isinstance(i, int) for i in value)):
            raise FaultError("unreadable_dates must be a list of appointment ids (or null)")
        s.unreadable_dates = value or None
    elif key == "hang":
        # {"seconds": N, "count": K, "operations": [...]}: hold the next K calls (default 1) open N seconds.
        if value is None:
            s.hang, s.hang_seconds = None, 0.0
        else:
            s.hang = _counted({"count": value.get("count", 1), "operations": value.get("operations")})
            s.hang_seconds = float(value["seconds"])
    elif key == "stamp_tz":
        if value is not None:
            try:
                ZoneInfo(str(value))
            except (ZoneInfoNotFoundError, ValueError):
                raise FaultError(f"stamp_tz must be an IANA zone name or null, not {value!r}") from None
        s.stamp_tz = None if value is None else str(value)
    else:
        raise FaultError(f"unknown switch {key!r}")
