"""The bookkeeping of syncs in Redis: the per-date dedup lock, ``sync:status:{date}``, ``task:{id}``, and
the ``task_results`` stream. Everything here is dates, ids, states and counts: no PHI."""

from __future__ import annotations

import json
from typing import Any

import redis

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


def claim(client: redis.Redis, date: str, task_id: str, ttl_s: int) -> tuple[str, bool]:
    """Take the sync lock of ``date``, or return the holder's id and ``True`` (deduplicated)."""
    lock_key = keys.sync_lock(date)
    for _ in range(3):
        if client.set(lock_key, task_id, nx=True, ex=ttl_s):
            return task_id, False
        holder = client.get(lock_key)
        if holder:
            return str(holder), True
        # The holder released between our SET and GET: try again.
    raise RuntimeError("sync lock contended")


# Extend the lock only for its holder: a retry or deferral keeps the date deduplicated while it waits.
_EXTEND_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def extend(client: redis.Redis, date: str, task_id: str, ttl_s: int) -> bool:
    """Keep ``task_id``'s lock of ``date`` for ``ttl_s`` more (a retry can outwait the lock)."""
    return bool(client.eval(_EXTEND_LUA, 1, keys.sync_lock(date), task_id, ttl_s))


def release(client: redis.Redis, date: str, task_id: str) -> bool:
    """Release the lock of ``date`` if ``task_id`` holds it."""
    return bool(client.eval(_RELEASE_LUA, 1, keys.sync_lock(date), task_id))


def record(client: redis.Redis, date: str, task_id: str, ttl_s: int, **fields: Any) -> None:
    """Merge ``fields`` into the day's status and the task's record (one round trip)."""
    flat = {name: _flat(value) for name, value in fields.items()}
    flat["task_id"] = task_id
    pipe = client.pipeline(transaction=False)
    pipe.hset(keys.sync_status(date), mapping=flat)
    pipe.expire(keys.sync_status(date), ttl_s)
    pipe.hset(keys.task_meta(task_id), mapping={**flat, "action": "schedule.sync", "date": date})
    pipe.expire(keys.task_meta(task_id), ttl_s)
    pipe.execute()


def append_result(
    client: redis.Redis, task_id: str, action: str, status: str, summary: dict[str, Any], maxlen: int
) -> None:
    """One entry on ``task_results`` per finished task."""
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


_INT_FIELDS = frozenset({"duration_ms", "attempt", "retry_in_s", "deferrals"})


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
