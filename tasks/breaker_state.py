"""The Tebra breaker's state in Redis: one truth for every worker process and for the API.

``cb:tebra`` (hash) holds ``state`` (closed | open | half), ``reason`` (errors | latency | forced),
``opened_at``, ``open_until``, ``last_fail``, ``changed_at`` (unix seconds) and ``trips``; ``cb:force_open``
(string) is the operator's override. Beside them, named from ``cb:tebra``:

- ``cb:tebra:failures`` sorted set of upstream failure times (the sliding window of rule 1);
- ``cb:tebra:latency`` sorted set of call latencies by time (the p95 window of rule 2);
- ``cb:tebra:trial`` the half-open trial lock (SET NX PX: one trial call at a time across processes);
- ``cb:tebra:sample`` the shared counter that admits 1 call in N while half-open for latency.

Every decision is one Lua script, timed by Redis's own clock (``TIME``), so processes on hosts with
skewed clocks still agree, and exactly one caller sees each transition (it announces it; nobody else does).
This module is free of pybreaker and zeep so the API can read and steer the breaker; the guard that wraps
Tebra calls is ``tasks/tebra/breaker.py``. docs/breaker.md is the operator's page.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from config import Settings
from tasks import events, keys

log = logging.getLogger(__name__)

CLOSED = "closed"
OPEN = "open"
HALF = "half"
UNKNOWN = "unknown"  # Redis cannot be read: never reported as closed

REASON_ERRORS = "errors"
REASON_LATENCY = "latency"
REASON_FORCED = "forced"

STATE = keys.BREAKER
FORCE_OPEN = keys.BREAKER_FORCE_OPEN
FAILURES = f"{keys.BREAKER}:failures"
LATENCY = f"{keys.BREAKER}:latency"
TRIAL = f"{keys.BREAKER}:trial"
SAMPLE = f"{keys.BREAKER}:sample"
ALL_KEYS = (STATE, FORCE_OPEN, FAILURES, LATENCY, TRIAL, SAMPLE)

MAX_LATENCY_SAMPLES = 5000  # bounds the p95 sort; two minutes of Tebra's paced calls stay far below it


@dataclass(frozen=True)
class BreakerConfig:
    """The rules' numbers (config/settings.py BREAKER_*)."""

    failure_threshold: int = 3
    window_s: float = 60.0
    open_s: float = 60.0
    latency_p95_s: float = 3.0
    latency_window_s: float = 120.0
    sample_every: int = 10
    latency_min_samples: int = 5
    half_retry_s: float = 5.0
    trial_ttl_s: float = 45.0  # the trial lock outlives the longest call, so a dead trial frees it

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerConfig:
        return cls(
            failure_threshold=settings.breaker_failure_threshold,
            window_s=settings.breaker_window_s,
            open_s=settings.breaker_open_s,
            latency_p95_s=settings.breaker_latency_p95_s,
            latency_window_s=settings.breaker_latency_window_s,
            sample_every=settings.breaker_sample_every,
            latency_min_samples=settings.breaker_latency_min_samples,
            half_retry_s=settings.breaker_half_retry_s,
            trial_ttl_s=settings.tebra_connect_timeout_s + settings.tebra_operation_timeout_s + 5.0,
        )

    def args(self) -> list[Any]:
        """The ARGV prefix every script reads (see _PRELUDE)."""
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


@dataclass(frozen=True)
class Transition:
    """One change of state, seen by exactly the caller whose script made it."""

    before: str
    after: str
    reason: str

    @classmethod
    def parse(cls, text: str, reason: str) -> Transition | None:
        if not text:
            return None
        before, _, after = text.partition(">")
        return cls(before, after, reason)


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


# KEYS: state, force, failures, latency, trial, sample.
# ARGV[1..10]: threshold, window_s, open_s, p95_s, latency_window_s, sample_every, min_samples,
# trial_ttl_ms, half_retry_ms, max_samples; the script's own arguments follow from ARGV[11].
_PRELUDE = """
local K_STATE, K_FORCE, K_FAIL = KEYS[1], KEYS[2], KEYS[3]
local K_LAT, K_TRIAL, K_SAMPLE = KEYS[4], KEYS[5], KEYS[6]
local threshold, window, open_s = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local p95_limit, lat_window, every = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local min_samples, trial_ttl_ms, half_retry_ms = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local max_samples = tonumber(ARGV[10])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function fmt(x) return string.format('%.3f', x) end
local function p95(since)
  local members = redis.call('ZRANGEBYSCORE', K_LAT, '(' .. fmt(since), '+inf')
  local n = #members
  if n == 0 or n < min_samples then return nil, n end
  local values = {}
  for i, m in ipairs(members) do values[i] = tonumber(string.match(m, '^([^:]+)')) end
  table.sort(values)
  return values[math.ceil(0.95 * n)], n
end
local function move(before, after, reason)
  local fields = {'state', after, 'reason', reason, 'changed_at', fmt(now)}
  if after == 'open' then
    table.insert(fields, 'opened_at'); table.insert(fields, fmt(now))
    table.insert(fields, 'open_until')
    table.insert(fields, reason == 'forced' and '' or fmt(now + open_s))
    redis.call('HINCRBY', K_STATE, 'trips', 1)
  end
  redis.call('HSET', K_STATE, unpack(fields))
  if after ~= 'half' then redis.call('DEL', K_TRIAL) end
  redis.call('DEL', K_SAMPLE)
  if after == 'closed' then redis.call('DEL', K_FAIL) end
  return before .. '>' .. after
end
local st = redis.call('HMGET', K_STATE, 'state', 'reason', 'opened_at', 'open_until')
local state, reason = st[1] or 'closed', st[2] or ''
if not st[1] then redis.call('HSET', K_STATE, 'state', 'closed', 'reason', '', 'trips', 0) end
local forced = redis.call('EXISTS', K_FORCE) == 1
"""

# ARGV[11]: this call's token. Returns {admitted, state, reason, retry_after_ms (-1: until cleared), role,
# transition}.
_ADMIT_LUA = (
    _PRELUDE
    + """
local token = ARGV[11]
if forced then
  local tr = ''
  if state ~= 'open' or reason ~= 'forced' then tr = move(state, 'open', 'forced') end
  return {0, 'open', 'forced', -1, '', tr}
end
local tr = ''
if state == 'open' then
  local until_ = tonumber(st[4]) or ((tonumber(st[3]) or now) + open_s)
  if now < until_ then return {0, 'open', reason, math.ceil((until_ - now) * 1000), '', ''} end
  tr = move('open', 'half', 'errors')
  state, reason = 'half', 'errors'
end
if state == 'half' then
  if reason == 'latency' then
    local n = redis.call('INCR', K_SAMPLE)
    if (n - 1) % every == 0 then return {1, 'half', reason, 0, 'sample', tr} end
    return {0, 'half', reason, half_retry_ms, '', tr}
  end
  if redis.call('SET', K_TRIAL, token, 'NX', 'PX', trial_ttl_ms) then
    return {1, 'half', reason, 0, 'trial', tr}
  end
  return {0, 'half', reason, half_retry_ms, '', tr}
end
return {1, 'closed', '', 0, 'normal', tr}
"""
)

# ARGV[11..13]: token, failed (1|0), latency seconds. Returns {state, reason, transition, failures, p95}.
_RECORD_LUA = (
    _PRELUDE
    + """
local token, failed, seconds = ARGV[11], ARGV[12] == '1', tonumber(ARGV[13])
redis.call('ZADD', K_LAT, fmt(now), fmt(seconds) .. ':' .. token)
redis.call('ZREMRANGEBYSCORE', K_LAT, '-inf', fmt(now - lat_window))
local extra = redis.call('ZCARD', K_LAT) - max_samples
if extra > 0 then redis.call('ZREMRANGEBYRANK', K_LAT, 0, extra - 1) end
if failed then
  redis.call('ZADD', K_FAIL, fmt(now), token)
  redis.call('HSET', K_STATE, 'last_fail', fmt(now))
end
redis.call('ZREMRANGEBYSCORE', K_FAIL, '-inf', fmt(now - window))
local failures = redis.call('ZCARD', K_FAIL)
local p = p95(now - lat_window)
local is_trial = redis.call('GET', K_TRIAL) == token
if is_trial then redis.call('DEL', K_TRIAL) end
local tr = ''
if not forced then
  local tripped = failed and failures >= threshold
  if state == 'half' and reason ~= 'latency' then
    if is_trial and failed then tr = move('half', 'open', 'errors')
    elseif is_trial then tr = move('half', 'closed', '')
    elseif tripped then tr = move('half', 'open', 'errors') end
  elseif state == 'half' then
    if tripped then tr = move('half', 'open', 'errors')
    elseif p == nil or p <= p95_limit then tr = move('half', 'closed', '') end
  elseif state == 'closed' then
    if tripped then tr = move('closed', 'open', 'errors')
    elseif p ~= nil and p > p95_limit then tr = move('closed', 'half', 'latency') end
  end
  if tr ~= '' then
    local after = redis.call('HMGET', K_STATE, 'state', 'reason')
    state, reason = after[1], after[2]
  end
end
return {state, reason, tr, failures, p and fmt(p) or ''}
"""
)

# ARGV[11..13]: command (force | clear | set), target state, by/reason. Returns the transition or ''.
_CONTROL_LUA = (
    _PRELUDE
    + """
local cmd, target, extra = ARGV[11], ARGV[12], ARGV[13]
if cmd == 'force' then
  redis.call('SET', K_FORCE, extra)
  if state ~= 'open' or reason ~= 'forced' then return move(state, 'open', 'forced') end
  return ''
end
if cmd == 'clear' then
  redis.call('DEL', K_FORCE, K_FAIL, K_LAT, K_TRIAL, K_SAMPLE)
  if state ~= 'closed' or reason ~= '' then return move(state, 'closed', '') end
  return ''
end
if forced then return '' end
if state ~= target then return move(state, target, extra) end
return ''
"""
)

# Read-only: everything GET /ops/breaker shows, as JSON, from one consistent moment.
_SNAPSHOT_LUA = (
    _PRELUDE
    + """
local h = redis.call('HGETALL', K_STATE)
local out = {}
for i = 1, #h, 2 do out[h[i]] = h[i + 1] end
local p, samples = p95(now - lat_window)
out.state, out.reason = state, reason
if forced then out.state, out.reason = 'open', 'forced' end
out.forced = forced and (redis.call('GET', K_FORCE) or '') or ''
out.failures = redis.call('ZCOUNT', K_FAIL, '(' .. fmt(now - window), '+inf')
out.samples = samples
out.p95_s = p and fmt(p) or ''
out.trial_in_progress = redis.call('EXISTS', K_TRIAL)
out.sample_counter = redis.call('GET', K_SAMPLE) or '0'
out.now = fmt(now)
return cjson.encode(out)
"""
)


class BreakerStore:
    """The scripts over one Redis client: admit a call, record its outcome, force, clear, read."""

    def __init__(self, client: redis.Redis, config: BreakerConfig) -> None:
        self.client = client
        self.config = config
        self._admit = client.register_script(_ADMIT_LUA)
        self._record = client.register_script(_RECORD_LUA)
        self._control = client.register_script(_CONTROL_LUA)
        self._snapshot = client.register_script(_SNAPSHOT_LUA)

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
            state=_text(state),
            reason=_text(reason),
            retry_after_s=None if retry_ms < 0 else retry_ms / 1000.0,
            role=_text(role),
            transition=Transition.parse(_text(transition), _text(reason)),
        )

    def record(self, token: str, *, failed: bool, seconds: float) -> Recorded:
        """Count one finished call: its latency always, a failure when ``failed`` (upstream only)."""
        state, reason, transition, failures, p95 = self._run(
            self._record, token, "1" if failed else "0", f"{max(0.0, seconds):.6f}"
        )
        return Recorded(
            state=_text(state),
            reason=_text(reason),
            failures=int(failures),
            p95_s=float(p95) if p95 else None,
            transition=Transition.parse(_text(transition), _text(reason)),
        )

    def force_open(self, by: str = "ops") -> Transition | None:
        """Hold it open until :meth:`clear` (sets ``cb:force_open``)."""
        marker = json.dumps({"at": events.utc_now_iso(), "by": by}, sort_keys=True)
        return Transition.parse(_text(self._run(self._control, "force", OPEN, marker)), REASON_FORCED)

    def clear(self) -> Transition | None:
        """Drop the override and every count: closed, with a fresh window."""
        return Transition.parse(_text(self._run(self._control, "clear", CLOSED, "")), "")

    def set_state(self, state: str, reason: str) -> Transition | None:
        """Move to ``state`` unless forced open (pybreaker's open()/half_open()/close() land here)."""
        return Transition.parse(_text(self._run(self._control, "set", state, reason)), reason)

    def snapshot(self) -> dict[str, Any]:
        """What an operator sees: state, counts, p95 and when it next lets a call through."""
        raw = json.loads(self._run(self._snapshot))
        return describe(raw, self.config)


def describe(raw: dict[str, Any], config: BreakerConfig) -> dict[str, Any]:
    """The snapshot script's fields as the JSON GET /api/v1/ops/breaker answers."""
    state, reason = raw.get("state") or CLOSED, raw.get("reason") or ""
    now = float(raw["now"])
    open_until = _float(raw.get("open_until"))
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
    p95 = _float(raw.get("p95_s"))
    return {
        "state": state,
        "reason": reason or None,
        "forced": json.loads(forced) if forced.startswith("{") else bool(forced),
        "opened_at": _iso(_float(raw.get("opened_at"))),
        "last_fail": _iso(_float(raw.get("last_fail"))),
        "changed_at": _iso(_float(raw.get("changed_at"))),
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


@dataclass(frozen=True)
class Glance:
    """The breaker's state read cheaply (no script): enough for a request path to decide."""

    state: str
    reason: str
    retry_in_s: float | None  # None: forced open, until cleared

    @property
    def is_open(self) -> bool:
        return self.state == OPEN


def glance(client: redis.Redis, *, now: float | None = None) -> Glance:
    """Open, half or closed, and how long until it tries again (raises redis errors: the caller decides)."""
    pipe = client.pipeline(transaction=False)
    pipe.hmget(STATE, ["state", "reason", "open_until"])
    pipe.exists(FORCE_OPEN)
    (state, reason, open_until), forced = pipe.execute()
    if forced:
        return Glance(OPEN, REASON_FORCED, None)
    state, reason = _text(state) or CLOSED, _text(reason)
    until = _float(open_until)
    if state != OPEN:
        return Glance(state, reason, 0.0)
    if until is None:
        return Glance(state, reason, None if reason == REASON_FORCED else 0.0)
    return Glance(state, reason, max(0.0, until - (time.time() if now is None else now)))


def unknown_state(error: BaseException) -> dict[str, Any]:
    """What the breaker reports when Redis cannot be read: ``unknown``, never ``closed``."""
    return {"state": UNKNOWN, "reason": "redis_unavailable", "error": type(error).__name__}


def transition_event(
    transition: Transition, *, by: str, detail: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``breaker_state_changed`` payload (topic ``ops``): no PHI, only states, reasons and counts."""
    return {
        "breaker": "tebra",
        "from": transition.before,
        "to": transition.after,
        "reason": transition.reason or None,
        "by": by,
        "at": events.utc_now_iso(),
        **(detail or {}),
    }


def announce(
    publisher: events.EventPublisher,
    transition: Transition,
    *,
    by: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Log and publish one transition; called only by the caller whose script made it (so: once)."""
    data = transition_event(transition, by=by, detail=detail)
    log.warning(
        "tebra breaker %s -> %s (%s)",
        transition.before,
        transition.after,
        transition.reason or "-",
        extra={"breaker_from": transition.before, "breaker_to": transition.after, "by": by},
    )
    try:
        publisher.publish(events.BREAKER_STATE_CHANGED, data)
    except redis.RedisError as exc:  # the transition itself is stored; only its announcement is lost
        log.error("breaker_state_changed not published: %s", type(exc).__name__)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _iso(seconds: float | None) -> str | None:
    if seconds is None or math.isnan(seconds):
        return None
    stamp = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")
