"""The bookkeeping of syncs in Redis: the per-date dedup lock, ``sync:status:{date}``, ``task:{id}``, and
the ``task_results`` stream. Everything here is dates, ids, states and counts: no PHI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.client import Pipeline

from tasks import keys

QUEUED = "queued"
RUNNING = "running"
RETRYING = "retrying"
DEFERRED = "deferred"
SUCCEEDED = "succeeded"
FAILED = "failed"
FINISHED_STATES = frozenset({SUCCEEDED, FAILED})

# Compare-and-delete: only the task that holds the lock may release it.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# Claim a day's lock and record it queued, one round trip (POST /schedule/sync, beat): KEYS[1] the lock,
# KEYS[2] the day's status, KEYS[3] the task's record; ARGV[1] task id, ARGV[2] lock TTL s, ARGV[3] status
# TTL s, ARGV[4] date, ARGV[5] '1' when a full read was asked for (mode=full), ARGV[6..] the status fields as
# field, value pairs. Returns {1, task id} when claimed, else {0, holder} ('' when the holder released between
# the SET and the GET: the caller tries again). A full read asked for while a sync is queued or running marks
# the day (``force_full``): that sync reads it in full if it has not started, else the day's next one does.
_CLAIM_QUEUED_LUA = """
if ARGV[5] == '1' then redis.call('HSET', KEYS[2], 'force_full', '1') end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return {0, redis.call('GET', KEYS[1]) or ''}
end
redis.call('HSET', KEYS[2], 'task_id', ARGV[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[3], 'task_id', ARGV[1], 'action', 'schedule.sync', 'date', ARGV[4], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {1, ARGV[1]}
"""


def claim_queued(
    client: redis.Redis,
    date: str,
    task_id: str,
    lock_ttl_s: int,
    status_ttl_s: int,
    *,
    force_full: bool = False,
    **fields: Any,
) -> tuple[str, bool]:
    """Take the sync lock of ``date`` and, when taken, :func:`record` ``fields`` (state queued …), in one
    round trip; else the holder's id and ``True`` (deduplicated). ``force_full`` marks the day for a full
    read either way."""
    flat = [part for name, value in fields.items() for part in (name, _flat(value))]
    keys_ = [keys.sync_lock(date), keys.sync_status(date), keys.task_meta(task_id)]
    for _ in range(3):
        claimed, holder = client.register_script(_CLAIM_QUEUED_LUA)(
            keys=keys_, args=[task_id, lock_ttl_s, status_ttl_s, date, "1" if force_full else "", *flat]
        )
        if int(claimed):
            return task_id, False
        if holder:
            return str(holder), True
    raise RuntimeError("sync lock contended")


# Extend the lock only for its holder: a retry or deferral keeps the date deduplicated while it waits.
_EXTEND_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


# A sync's start, in one script so that two tasks never run one day (docs/tebra.md, "Coalesced syncs"), and
# in one round trip with the read of the day's status that decides full or incremental.
# KEYS[1] the own day's status; then, per following day, its lock and its status. ARGV[1] the task id,
# ARGV[2] started_at, ARGV[3] status TTL s, ARGV[4] attempt, ARGV[5] the oldest last full sync a day may have
# and still be synced incrementally (ISO UTC, as utc_now_iso writes it: such strings order as instants),
# ARGV[6..] the following days. Returns {'done'} when this task already finished its day, {'taken', by}
# when another task has taken its day into its own fetch, else {'ok', last success started_at, last full
# started_at, day, task id, day, task id, ...}: the own day's last syncs (read before this start) and the
# days it took. It takes following days only when its own day is due a full sync (an incremental sync asks
# Tebra for one day's changes), and a following day only while that day is queued under the task that holds
# its lock (or is one this task took on an earlier attempt) and is due a full sync too; a day it cannot take
# is left to its own task.
_START_LUA = """
local me = ARGV[1]
local active = {running = true, retrying = true, deferred = true}
local function due_full(last_success, last_full)
  return (not last_success) or last_success == '' or (not last_full) or last_full == '' or last_full < ARGV[5]
end
local own = redis.call('HMGET', KEYS[1], 'task_id', 'state', 'run_by', 'last_success_started_at',
                       'last_full_started_at', 'force_full')
if own[1] == me and (own[2] == 'succeeded' or own[2] == 'failed') then return {'done'} end
if own[1] == me and own[3] and own[3] ~= '' and own[3] ~= me and active[own[2]] then
  return {'taken', own[3]}
end
local running = {'state', 'running', 'started_at', ARGV[2], 'attempt', ARGV[4], 'error', '', 'run_by', me}
redis.call('HSET', KEYS[1], 'task_id', me, unpack(running))
redis.call('EXPIRE', KEYS[1], ARGV[3])
if own[6] == '1' then
  -- mode=full: answered as a day with no full sync yet, so the plan reads it whole
  own[5] = ''
  redis.call('HDEL', KEYS[1], 'force_full')
end
local answer = {'ok', own[4] or '', own[5] or ''}
if not due_full(own[4], own[5]) then return answer end
for i = 2, #KEYS, 2 do
  local holder = redis.call('GET', KEYS[i])
  if holder then
    local day = redis.call('HMGET', KEYS[i + 1], 'task_id', 'state', 'run_by', 'last_success_started_at',
                           'last_full_started_at')
    local queued = day[2] == 'queued'
    local mine = day[3] == me and active[day[2]]
    if day[1] == holder and (queued or mine) and due_full(day[4], day[5]) then
      redis.call('HSET', KEYS[i + 1], unpack(running))
      redis.call('EXPIRE', KEYS[i + 1], ARGV[3])
      answer[#answer + 1] = ARGV[5 + i / 2]
      answer[#answer + 1] = holder
    end
  end
end
return answer
"""

DONE = "done"
TAKEN = "taken"
STARTED = "ok"


@dataclass(frozen=True)
class Start:
    """How a sync task's start went: ``ok`` (it runs; ``days`` are the following days it took, each with
    the id of the task it runs them for; the ``last_*`` are its own day's last syncs, for the plan),
    ``taken`` (another task, ``by``, runs its day) or ``done`` (this task finished its day already)."""

    outcome: str
    by: str = ""
    days: tuple[tuple[str, str], ...] = field(default=())
    last_success_started_at: str = ""
    last_full_started_at: str = ""


def start(
    client: redis.Redis,
    date: str,
    task_id: str,
    ttl_s: int,
    *,
    started_at: str,
    attempt: int,
    full_before: str,
    following: Sequence[str] = (),
) -> Start:
    """Mark ``task_id``'s sync of ``date`` running and, when the day is due a full sync (its last full sync
    is older than ``full_before``, or there was none), take the ``following`` days that are queued and due
    one too."""
    keys_ = [keys.sync_status(date)]
    for day in following:
        keys_ += [keys.sync_lock(day), keys.sync_status(day)]
    # register_script: EVALSHA (the body is neither sent nor hashed by Redis on every call), EVAL only the
    # first time a server does not know it.
    start_script = client.register_script(_START_LUA)
    reply = start_script(keys=keys_, args=[task_id, started_at, ttl_s, attempt, full_before, *following])
    outcome = str(reply[0])
    if outcome == TAKEN:
        return Start(TAKEN, by=str(reply[1]))
    if outcome == DONE:
        return Start(DONE)
    last_success, last_full, *pairs = (str(item) for item in reply[1:])
    days = tuple(zip(pairs[::2], pairs[1::2], strict=True))
    return Start(STARTED, days=days, last_success_started_at=last_success, last_full_started_at=last_full)


def extend(client: redis.Redis, date: str, task_id: str, ttl_s: int) -> bool:
    """Keep ``task_id``'s lock of ``date`` for ``ttl_s`` more (a retry can outwait the lock)."""
    return bool(client.eval(_EXTEND_LUA, 1, keys.sync_lock(date), task_id, ttl_s))


def release(client: redis.Redis, date: str, task_id: str) -> bool:
    """Release the lock of ``date`` if ``task_id`` holds it."""
    return bool(client.eval(_RELEASE_LUA, 1, keys.sync_lock(date), task_id))


def queue_release(pipe: Pipeline, date: str, task_id: str) -> None:
    """Queue :func:`release` on ``pipe``."""
    pipe.eval(_RELEASE_LUA, 1, keys.sync_lock(date), task_id)


def record(client: redis.Redis, date: str, task_id: str, ttl_s: int, **fields: Any) -> None:
    """Merge ``fields`` into the day's status and the task's record (one round trip)."""
    pipe = client.pipeline(transaction=False)
    queue_record(pipe, date, task_id, ttl_s, **fields)
    pipe.execute()


def queue_record(pipe: Pipeline, date: str, task_id: str, ttl_s: int, **fields: Any) -> None:
    """Queue :func:`record` on ``pipe``."""
    flat = {name: _flat(value) for name, value in fields.items()}
    pipe.hset(keys.sync_status(date), mapping={**flat, "task_id": task_id})
    pipe.expire(keys.sync_status(date), ttl_s)
    note_task(pipe, date, task_id, ttl_s, **fields)


def note_task(pipe: Pipeline, date: str, task_id: str, ttl_s: int, **fields: Any) -> None:
    """Queue the merge of ``fields`` into the task's own record (``GET /tasks/{id}``) on ``pipe``."""
    flat = {name: _flat(value) for name, value in fields.items()}
    pipe.hset(
        keys.task_meta(task_id), mapping={**flat, "task_id": task_id, "action": "schedule.sync", "date": date}
    )
    pipe.expire(keys.task_meta(task_id), ttl_s)


def note_redelivery(client: redis.Redis, task_id: str) -> None:
    """Count, in the task's record, a delivery of a task that had already finished (acknowledged, not run)."""
    client.hincrby(keys.task_meta(task_id), "redeliveries", 1)


def append_result(
    client: redis.Redis | Pipeline,
    task_id: str,
    action: str,
    status: str,
    summary: dict[str, Any],
    maxlen: int,
) -> None:
    """One entry on ``task_results`` per finished task (sent now, or queued when ``client`` is a pipeline)."""
    client.xadd(
        keys.TASK_RESULTS,
        {
            "task_id": task_id,
            "action": action,
            "status": status,
            "summary": json.dumps(summary, sort_keys=True),
        },
        maxlen=maxlen,
        approximate=True,
    )


def read_status(client: redis.Redis, date: str) -> dict[str, Any] | None:
    """The last sync of ``date``, or None if there was none."""
    return _parse(client.hgetall(keys.sync_status(date)))


def read_task(client: redis.Redis, task_id: str) -> dict[str, Any] | None:
    """What is known of one task, or None."""
    return _parse(client.hgetall(keys.task_meta(task_id)))


_INT_FIELDS = frozenset(
    {
        "duration_ms",
        "attempt",
        "retry_in_s",
        "deferrals",
        "redeliveries",
        "rows_rejected",
        "suspect_empty_kept",
    }
)


def _flat(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return ""
    return str(value)


def _parse(raw: dict[str, str]) -> dict[str, Any] | None:
    if not raw:
        return None
    parsed: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "counts" and value:
            parsed[name] = json.loads(value)
        elif name in _INT_FIELDS and value:
            parsed[name] = int(value)
        else:
            parsed[name] = value or None
    return parsed
