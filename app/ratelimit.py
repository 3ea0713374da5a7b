"""A token bucket per client IP + user, kept in Redis so every API process shares it.

Each bucket holds up to RATE_LIMIT_CAPACITY tokens and refills at RATE_LIMIT_REFILL_PER_S. A request costs
:func:`cost_of` tokens: what its route declares (app/route.py; a sync, which makes a worker call Tebra, costs
more than a read). The take-or-refuse
decision is one Lua script using the Redis server's clock (``TIME``), so API processes with skewed clocks
or racing requests cannot overdraw a bucket. Refused: 429 ``RATE_LIMIT`` with ``Retry-After`` (whole seconds
until the cost is back). Redis unreachable: 503 ``SERVICE_UNAVAILABLE`` through the app's Redis error
handler: never fail open.

Reads take a lease: when the bucket has them, a read takes up to LEASE_TOKENS tokens in that one script call
and the process spends the spare ones on the same identity's next reads within LEASE_S, with no Redis round
trip (that round trip was a sixth of a read's CPU, docs/benchmarks.md). Every token spent was taken from the
shared bucket first, so a client never gets more than the bucket allows; what a lease costs is that spare
tokens unused after LEASE_S are lost, and that a second API process cannot spend them.

The client IP is the socket peer unless TRUSTED_PROXIES > 0: then the address ``TRUSTED_PROXIES`` hops from
the right of ``X-Forwarded-For`` (each trusted proxy appends the address it saw; anything left of that the
client can forge).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from flask import Flask, current_app, request

from app import auth
from app.errors import ApiError
from app.route import declaration_of
from app.services import services
from config import Settings

KEY_PREFIX = "ratelimit:"
EXTENSION_KEY = "rate_limiter"

# What routes declare (app/route.py): a sync queues Tebra work for a worker; anything else that changes state
# costs a little more than a read. A request no declaration covers (a 404, a preflight) costs READ_COST for
# GET/HEAD/OPTIONS and WRITE_COST otherwise.
READ_COST = 1
WRITE_COST = 3
SYNC_COST = 10
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LEASE_TOKENS = 10  # a read takes up to this many when the bucket has them (at least its cost)
LEASE_S = 1.0  # spare tokens of a lease are spent within this, or lost
MAX_LEASES = 10000  # identities with a live lease in one process; expired ones are dropped past this

# KEYS[1] bucket hash. ARGV: capacity, refill per second, cost, wanted (>= cost: takes up to that many when
# there are, never fewer than cost). Returns {allowed 0|1, tokens left (floor), ms until ``cost`` tokens are
# available (0 when allowed), tokens taken}.
_TAKE_LUA = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local wanted = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ms')
local tokens = tonumber(state[1])
local last = tonumber(state[2])
if tokens == nil or last == nil then
  tokens = capacity
  last = now
end
if now > last then
  tokens = math.min(capacity, tokens + (now - last) * rate / 1000)
end
local allowed = 0
local wait_ms = 0
local taken = 0
if tokens >= cost then
  taken = math.max(cost, math.min(wanted, math.floor(tokens)))
  tokens = tokens - taken
  allowed = 1
else
  wait_ms = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ms', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 1000)
return {allowed, math.floor(tokens), wait_ms, taken}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int
    retry_after_s: int
    taken: int = 0


@dataclass
class _Lease:
    tokens: int
    until: float


class RateLimiter:
    """Takes tokens from one bucket per identity, atomically, on the Redis server's clock."""

    def __init__(self, client: redis.Redis, capacity: int, refill_per_s: float) -> None:
        if capacity < 1 or refill_per_s <= 0:
            raise ValueError("RATE_LIMIT_CAPACITY must be >= 1 and RATE_LIMIT_REFILL_PER_S > 0")
        self.capacity = capacity
        self.refill_per_s = refill_per_s
        self._take = client.register_script(_TAKE_LUA)
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()

    def take(self, identity: str, cost: int, wanted: int = 0) -> Decision:
        """Take ``cost`` tokens from ``identity``'s bucket (up to ``wanted`` when it has them), or refuse and
        say how long to wait."""
        cost = max(1, min(cost, self.capacity))  # a cost above the capacity could never be paid
        allowed, remaining, wait_ms, taken = self._take(
            keys=[KEY_PREFIX + identity], args=[self.capacity, self.refill_per_s, cost, max(cost, wanted)]
        )
        return Decision(bool(allowed), int(remaining), max(1, math.ceil(int(wait_ms) / 1000)), int(taken))

    def take_read(self, identity: str) -> Decision:
        """Charge one read: from this process's lease for ``identity`` if it has a token left, else from the
        bucket, leasing up to LEASE_TOKENS at once."""
        now = time.monotonic()
        with self._lock:
            lease = self._leases.get(identity)
            if lease is not None and lease.tokens >= READ_COST and lease.until > now:
                lease.tokens -= READ_COST
                return Decision(True, lease.tokens, 0, READ_COST)
        decision = self.take(identity, READ_COST, wanted=LEASE_TOKENS)
        if decision.allowed and decision.taken > READ_COST:
            with self._lock:
                if len(self._leases) >= MAX_LEASES:
                    self._leases = {key: kept for key, kept in self._leases.items() if kept.until > now}
                if len(self._leases) < MAX_LEASES:  # else this read's spare tokens are simply lost
                    self._leases[identity] = _Lease(decision.taken - READ_COST, now + LEASE_S)
        return decision


def client_ip(remote_addr: str | None, forwarded_for: str | None, trusted_proxies: int) -> str:
    """The caller's address: the peer, or X-Forwarded-For's entry ``trusted_proxies`` hops from the right."""
    peer = remote_addr or "unknown"
    if trusted_proxies <= 0 or not forwarded_for:
        return peer
    hops = [item.strip() for item in forwarded_for.split(",") if item.strip()]
    if len(hops) < trusted_proxies:
        return peer  # fewer hops than proxies we run: the header did not come through all of them
    return hops[-trusted_proxies][:64]


def cost_of(view: Callable[..., Any] | None, method: str) -> int:
    """The tokens one ``method`` request to ``view`` costs: its declared cost, else by the method."""
    declared = declaration_of(view)
    if declared is not None and method in {declared.method, "HEAD" if declared.method == "GET" else ""}:
        return declared.cost
    return READ_COST if method in _SAFE_METHODS else WRITE_COST


def limiter(app: Flask) -> RateLimiter:
    found = app.extensions.get(EXTENSION_KEY)
    if found is None:
        settings: Settings = app.config["CLINIC_SETTINGS"]
        found = RateLimiter(services().redis, settings.rate_limit_capacity, settings.rate_limit_refill_per_s)
        app.extensions[EXTENSION_KEY] = found
    return found


def _charge_api_request() -> None:
    if not request.path.startswith("/api/"):
        return
    settings: Settings = current_app.config["CLINIC_SETTINGS"]
    ip = client_ip(request.remote_addr, request.headers.get("X-Forwarded-For"), settings.trusted_proxies)
    # Anonymous and bad-token requests share their IP's "-" bucket: guessing tokens is rate-limited too.
    identity = f"{ip}|{auth.subject() or '-'}"
    cost = cost_of(current_app.view_functions.get(request.endpoint or ""), request.method)
    bucket = limiter(current_app)
    decision = bucket.take_read(identity) if cost == READ_COST else bucket.take(identity, cost)
    if not decision.allowed:
        raise ApiError(
            "RATE_LIMIT",
            "Too many requests; slow down.",
            details={"retry_after_s": decision.retry_after_s},
            headers={"Retry-After": str(decision.retry_after_s)},
        )


def init_app(app: Flask) -> None:
    """Charge every /api request before its view (and before a missing token is refused)."""
    app.before_request(_charge_api_request)
