"""The Tebra credentials latch: after the first security refusal, no process calls Tebra until an operator
resumes (docs/tebra.md, "The credentials latch").

A refused login retried by every sync, every patient lookup and the watch is how an account gets locked. So
the first refusal sets one hash in Redis, ``tebra:credentials``, that every worker process reads before any
Tebra call; an operator clears it (``POST /api/v1/ops/tebra {"action": "resume"}``) after fixing the
credentials. Each resume bumps ``generation``: a worker that sees a new generation reads its credentials again
(``TEBRA_CREDENTIALS_FILE``), without a restart.

Fields: ``refused_at`` (ISO UTC, empty when not latched), ``operation``, ``message`` (Tebra's security text as
it wrote it, secrets redacted: no PHI travels in a login refusal), ``generation``, ``verified`` (the
generation Tebra last accepted), ``resumed_at``, ``resumed_by``. Until Tebra has accepted a generation, one
call at a time goes out (a trial, under the lease ``tebra:credentials:trial``): the others wait for its
verdict, so even processes that start together send a wrong password once. Free of Tebra's client: the
API reads and clears it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from tasks import keys

# The first refusal wins: KEYS[1] the latch; ARGV: refused_at, operation, message. 1 when this call set it.
_TRIP_LUA = """
local current = redis.call('HGET', KEYS[1], 'refused_at')
if current and current ~= '' then return 0 end
redis.call('HSET', KEYS[1], 'refused_at', ARGV[1], 'operation', ARGV[2], 'message', ARGV[3])
return 1
"""

# KEYS[1] the latch; ARGV: resumed_at, resumed_by. Clears the refusal (if any) and bumps the generation, so
# every worker reads its credentials again; returns {was latched (0/1), new generation}.
_RESUME_LUA = """
local current = redis.call('HGET', KEYS[1], 'refused_at')
local was = (current and current ~= '') and 1 or 0
redis.call('HSET', KEYS[1], 'refused_at', '', 'resumed_at', ARGV[1], 'resumed_by', ARGV[2])
local generation = redis.call('HINCRBY', KEYS[1], 'generation', 1)
return {was, generation}
"""


@dataclass(frozen=True)
class LatchState:
    """What the latch says: ``refused`` (no Tebra call may go out) and why; ``generation`` of credentials."""

    refused: bool
    refused_at: str | None = None
    operation: str | None = None
    message: str | None = None
    generation: int = 0
    resumed_at: str | None = None
    resumed_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "refused": self.refused,
            "refused_at": self.refused_at,
            "operation": self.operation,
            "message": self.message,
            "generation": self.generation,
            "resumed_at": self.resumed_at,
            "resumed_by": self.resumed_by,
        }


def read(client: redis.Redis) -> LatchState:
    """The latch as stored (not latched when the key does not exist)."""
    raw: dict[Any, Any] = client.hgetall(keys.TEBRA_CREDENTIALS)
    values = {_text(name): _text(value) for name, value in raw.items()}
    return LatchState(
        refused=bool(values.get("refused_at")),
        refused_at=values.get("refused_at") or None,
        operation=values.get("operation") or None,
        message=values.get("message") or None,
        generation=int(values.get("generation") or 0),
        resumed_at=values.get("resumed_at") or None,
        resumed_by=values.get("resumed_by") or None,
    )


# Before a call. KEYS[1] the latch, KEYS[2] the trial lease; ARGV: token, lease ms. Answers {verdict,
# refused_at, generation}: 'refused' (latched), 'ok' (these credentials have been accepted by Tebra since the
# last resume), 'trial' (not yet: this caller makes the one call that finds out, holding the lease), 'wait'
# (another caller is making it). So a wrong password reaches Tebra once, however many processes start at once.
_ADMIT_LUA = """
local f = redis.call('HMGET', KEYS[1], 'refused_at', 'generation', 'verified')
local generation = f[2] or '0'
if f[1] and f[1] ~= '' then return {'refused', f[1], generation} end
if f[3] == generation then return {'ok', '', generation} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'trial', '', generation} end
return {'wait', '', generation}
"""

# After a trial call. KEYS[1] the latch, KEYS[2] the lease; ARGV: token, generation tried, '1' when Tebra
# accepted the credentials. Releases the lease (if still this token's) and records the verdict.
_SETTLE_LUA = """
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
if ARGV[3] == '1' and (redis.call('HGET', KEYS[1], 'generation') or '0') == ARGV[2] then
  redis.call('HSET', KEYS[1], 'verified', ARGV[2])
end
return 0
"""

ADMIT_OK = "ok"
ADMIT_REFUSED = "refused"
ADMIT_TRIAL = "trial"
ADMIT_WAIT = "wait"


def admit(client: redis.Redis, token: str, lease_ms: int) -> tuple[str, str, int]:
    """(verdict, refused_at, generation) for one call about to go out (see ``_ADMIT_LUA``)."""
    script = client.register_script(_ADMIT_LUA)
    verdict, refused_at, generation = script(
        keys=[keys.TEBRA_CREDENTIALS, keys.TEBRA_CREDENTIALS_TRIAL], args=[token, lease_ms]
    )
    return _text(verdict), _text(refused_at), int(generation)


def settle(client: redis.Redis, token: str, generation: int, *, accepted: bool) -> None:
    """End a trial: release its lease; when Tebra ``accepted`` the credentials, no more trials needed."""
    script = client.register_script(_SETTLE_LUA)
    script(
        keys=[keys.TEBRA_CREDENTIALS, keys.TEBRA_CREDENTIALS_TRIAL],
        args=[token, generation, "1" if accepted else "0"],
    )


def guard_fields(client: redis.Redis) -> tuple[str, int]:
    """What a worker reads before each call, one HMGET: ``refused_at`` ('' when free) and the generation."""
    refused_at, generation = client.hmget(keys.TEBRA_CREDENTIALS, ["refused_at", "generation"])
    return _text(refused_at or ""), int(generation or 0)


def trip(client: redis.Redis, *, refused_at: str, operation: str, message: str) -> bool:
    """Set the latch unless it is set; True when this call set it (that caller announces it, once)."""
    script = client.register_script(_TRIP_LUA)
    return bool(script(keys=[keys.TEBRA_CREDENTIALS], args=[refused_at, operation, message[:500]]))


def resume(client: redis.Redis, *, resumed_at: str, by: str) -> tuple[bool, int]:
    """Clear the latch and bump the credentials generation; (whether it was latched, the new generation)."""
    script = client.register_script(_RESUME_LUA)
    was, generation = script(keys=[keys.TEBRA_CREDENTIALS], args=[resumed_at, by])
    return bool(int(was)), int(generation)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
