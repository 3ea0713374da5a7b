"""A day's sync from request to end: the only writer of ``sync:status:{date}``, of the lock
``sync:lock:{date}``, of a sync task's record ``task:{id}`` and its ``task_results`` entry; it announces each
transition too.

``queued`` (:func:`claim`, the request) → ``running`` (:func:`start`, one script that may take following days
into the same fetch) → ``succeeded`` (:func:`queue_succeeded`) or ``suspect_empty`` (:func:`queue_suspect`);
on the way ``retrying`` or ``deferred`` (:func:`retrying`, :func:`deferred`) and, at the end, ``failed``
(:func:`failed`, or :func:`broker_refused` when the request could not be sent). A finished task delivered
again is counted, not run (:func:`redelivered`); the watch notes the days it read (:func:`queue_watched`).
tasks/sync/status.py reads what this writes. Everything here is dates, ids, states and counts: no PHI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
from redis.client import Pipeline

from tasks import events, keys, names, results
from tasks.events import EventPublisher

log = logging.getLogger(__name__)

QUEUED = "queued"
RUNNING = "running"
RETRYING = "retrying"
DEFERRED = "deferred"
SUCCEEDED = "succeeded"
FAILED = "failed"
SUSPECT_EMPTY = "suspect_empty"  # the day's state while a suspicious empty read is not confirmed
Days = Sequence[tuple[str, str]]  # (date, the id of the task the day is run for), the own day first


class Books(Protocol):
    """Where a running sync keeps its books (tasks/sync/run.py ``SyncContext``)."""

    @property
    def redis(self) -> redis.Redis: ...
    @property
    def publisher(self) -> EventPublisher: ...
    @property
    def status_ttl_s(self) -> int: ...
    @property
    def results_maxlen(self) -> int: ...
    @property
    def lock_ttl_s(self) -> int: ...


# Compare-and-delete: only the task that holds the lock may release it.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# Claim a day's lock and record it queued, one round trip (POST /schedule/sync, beat): KEYS[1] the lock,
# KEYS[2] the day's status, KEYS[3] the task's record; ARGV[1] task id, ARGV[2] lock TTL s, ARGV[3] status
# TTL s, ARGV[4] date, ARGV[5] '1' when a full read was asked for (mode=full), ARGV[6] the task's name,
# ARGV[7..] the status fields as field, value pairs. Returns {1, task id} when claimed, else {0, holder} (''
# when the holder released between the SET and the GET: the caller tries again). A full read asked for while a
# sync is queued or running marks the day (``force_full``): that sync reads it in full if it has not started,
# else the day's next one does.
_CLAIM_QUEUED_LUA = """
if ARGV[5] == '1' then redis.call('HSET', KEYS[2], 'force_full', '1') end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return {0, redis.call('GET', KEYS[1]) or ''}
end
redis.call('HSET', KEYS[2], 'task_id', ARGV[1], unpack(ARGV, 7))
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[3], 'task_id', ARGV[1], 'action', ARGV[6], 'date', ARGV[4], unpack(ARGV, 7))
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {1, ARGV[1]}
"""


def claim(
    client: redis.Redis,
    date: str,
    task_id: str,
    *,
    lock_ttl_s: int,
    status_ttl_s: int,
    requested_by: str,
    force_full: bool = False,
) -> tuple[str, bool]:
    """``queued``: take the sync lock of ``date`` for ``task_id`` and record the day queued, in one round
    trip; else the holder's id and ``True`` (deduplicated). ``force_full`` (``mode=full``) marks the day for a
    full read either way."""
    fields = {
        "state": QUEUED, "requested_at": events.utc_now_iso(), "requested_by": requested_by, "started_at": "",
        "finished_at": "", "duration_ms": "", "counts": "", "error": "", "attempt": 0,
    }  # fmt: skip
    flat = [part for name, value in fields.items() for part in (name, _flat(value))]
    keys_ = [keys.sync_lock(date), keys.sync_status(date), keys.task_meta(task_id)]
    for _ in range(3):
        claimed, holder = client.register_script(_CLAIM_QUEUED_LUA)(
            keys=keys_,
            args=[task_id, lock_ttl_s, status_ttl_s, date, "1" if force_full else "", names.SYNC, *flat],
        )
        if int(claimed):
            return task_id, False
        if holder:
            return str(holder), True
    raise RuntimeError("sync lock contended")


def broker_refused(client: redis.Redis, date: str, task_id: str, status_ttl_s: int) -> None:
    """``failed``: the broker refused the request's message; the lock goes, so nothing claims a sync that
    will never run."""
    release(client, date, task_id)
    record(client, date, task_id, status_ttl_s, state=FAILED, error="BROKER_UNAVAILABLE")


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


def queue_extend(pipe: Pipeline, date: str, task_id: str, ttl_s: int) -> None:
    """Queue keeping ``task_id``'s lock of ``date`` for ``ttl_s`` more (a retry can outwait the lock)."""
    pipe.eval(_EXTEND_LUA, 1, keys.sync_lock(date), task_id, ttl_s)


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
        keys.task_meta(task_id), mapping={**flat, "task_id": task_id, "action": names.SYNC, "date": date}
    )
    pipe.expire(keys.task_meta(task_id), ttl_s)


def _flat(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return ""
    return str(value)


# -- the transitions a running sync makes -------------------------------------------------------------------


def queue_started(pipe: Pipeline, books: Books, days: Days, *, started_at: str, attempt: int) -> None:
    """``running`` in each task's record (the start script set the days' statuses) and
    ``schedule_sync_started`` for every day the fetch runs; a day taken from another task names ``run_by``."""
    own_task = days[0][1]
    for day, day_task in days:
        fields: dict[str, Any] = {"state": RUNNING, "started_at": started_at, "attempt": attempt}
        data: dict[str, Any] = {"date": day, "task_id": day_task, "attempt": attempt}
        if day_task != own_task:
            fields["run_by"] = data["run_by"] = own_task
        note_task(pipe, day, day_task, books.status_ttl_s, **fields, error="")
        books.publisher.publish_on(pipe, events.SCHEDULE_SYNC_STARTED, data)


def queue_succeeded(
    pipe: Pipeline, books: Books, summary: dict[str, Any], *, finished_at: str, **fields: Any
) -> None:
    """``succeeded`` with the day's ``summary`` (its date, task id, mode, counts, duration) and ``fields``
    (the last syncs, flags): the status, ``schedule_synced``, the result entry, the lock released."""
    date, task_id = summary["date"], summary["task_id"]
    queue_record(pipe, date, task_id, books.status_ttl_s, state=SUCCEEDED, finished_at=finished_at,
                 duration_ms=summary["duration_ms"], counts=summary["counts"], mode=summary["mode"], error="",
                 **fields)  # fmt: skip
    books.publisher.publish_on(pipe, events.SCHEDULE_SYNCED, summary)
    results.append(pipe, task_id, names.SYNC, SUCCEEDED, summary, books.results_maxlen)
    queue_release(pipe, date, task_id)


def queue_suspect(
    pipe: Pipeline, books: Books, summary: dict[str, Any], *, first: bool, finished_at: str
) -> None:
    """``suspect_empty``: the day kept its rows (tasks/sync/day_reads.py); announced once per episode. The
    day's last successful and last full sync stay as they were: its next sync is a full read again."""
    date, task_id = summary["date"], summary["task_id"]
    queue_record(pipe, date, task_id, books.status_ttl_s, state=SUSPECT_EMPTY, finished_at=finished_at,
                 mode=summary["mode"], error="", suspect_empty_since=summary["suspect_since"],
                 suspect_empty_kept=summary["kept"], suspect_empty_reason=summary["reason"])  # fmt: skip
    if first:
        books.publisher.publish_on(pipe, events.SCHEDULE_SUSPECT_EMPTY, summary)
    results.append(pipe, task_id, names.SYNC, SUSPECT_EMPTY, summary, books.results_maxlen)
    queue_release(pipe, date, task_id)


# The watch's own bookkeeping on a day's status, only where the day has one (the watch creates no status for
# a day nobody asked about). KEYS[1] the day's status; ARGV: field, value pairs.
_NOTE_WATCHED_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
return 0
"""


def queue_watched(pipe: Pipeline, day: str, *, started_at: str, full: bool) -> None:
    """The watch read ``day`` (in full, or its changes) in a poll that began at ``started_at``: the day's
    next own sync plans from it."""
    noted = ["last_success_started_at", started_at, "watched_at", started_at]
    if full:
        noted += ["last_full_started_at", started_at]
    pipe.eval(_NOTE_WATCHED_LUA, 1, keys.sync_status(day), *noted)


def retrying(books: Books, days: Days, *, code: str, countdown: float, attempt: int) -> None:
    """``retrying``: every day of the fetch, its lock kept through the countdown."""
    for date, task_id in days:
        said = {"date": date, "task_id": task_id, "code": code, "retry_in_s": round(countdown, 2)}
        log.warning("sync retrying", extra={**said, "attempt": attempt})
        with books.redis.pipeline(transaction=True) as pipe:
            queue_record(pipe, date, task_id, books.status_ttl_s, state=RETRYING, error=code,
                         retry_in_s=round(countdown))  # fmt: skip
            queue_extend(pipe, date, task_id, books.lock_ttl_s + round(countdown))
            pipe.execute()


def deferred(
    books: Books, days: Days, *, code: str, countdown: float, deferrals: int, breaker: dict[str, Any],
    message: str,
) -> None:  # fmt: skip
    """``deferred`` and ``schedule_sync_deferred`` saying when it tries again, and why: ``CIRCUIT_OPEN``, or
    ``TEBRA_CREDENTIALS_REFUSED`` while the credentials latch holds (then ``message`` is Tebra's, no PHI)."""
    for date, task_id in days:
        said = {"date": date, "task_id": task_id, "code": code, "retry_in_s": round(countdown, 2)}
        log.info("sync deferred: tebra not called", extra={**said, "breaker": breaker})
        data = {"date": date, "task_id": task_id, "retry_in_s": round(countdown, 3),
                "deferrals": deferrals + 1, "breaker": breaker, "code": code}  # fmt: skip
        try:
            with books.redis.pipeline(transaction=True) as pipe:  # whoever reads the status finds the event
                queue_record(
                    pipe, date, task_id, books.status_ttl_s, state=DEFERRED, error=code,
                    **({"error_message": message[:400]} if message else {}),
                    retry_in_s=round(countdown), deferrals=deferrals + 1,
                )  # fmt: skip
                queue_extend(pipe, date, task_id, books.lock_ttl_s + round(countdown))
                books.publisher.publish_on(pipe, events.SCHEDULE_SYNC_DEFERRED, data)
                pipe.execute()
        except redis.RedisError as err:  # Redis down is why the breaker refused: the retry still goes out
            log.error("deferral not recorded: %s", type(err).__name__)


def failed(books: Books, days: Days, *, code: str, message: str) -> None:
    """``failed``, terminally, for every day of the fetch: status, ``schedule_sync_failed``, result entry,
    lock released, in one transaction (who reads ``failed`` finds the event). ``message`` carries no PHI."""
    for date, task_id in days:
        log.error("sync failed", extra={"date": date, "task_id": task_id, "code": code})
        finished_at = events.utc_now_iso()
        data = {"date": date, "task_id": task_id, "error": {"code": code, "message": message}}
        with books.redis.pipeline(transaction=True) as pipe:
            queue_record(pipe, date, task_id, books.status_ttl_s, state=FAILED, finished_at=finished_at,
                         error=code, error_message=message)  # fmt: skip
            books.publisher.publish_on(pipe, events.SCHEDULE_SYNC_FAILED, data)
            results.append(pipe, task_id, names.SYNC, FAILED, data, books.results_maxlen)
            queue_release(pipe, date, task_id)
            pipe.execute()


def resent(client: redis.Redis, date: str, task_id: str) -> None:
    """The sweep sent a lost message again (tasks/sync/sweep.py): counted as ``resends`` in its record."""
    log.warning("sync message lost by the broker; sent again", extra={"date": date, "task_id": task_id})
    client.hincrby(keys.task_meta(task_id), "resends", 1)


def redelivered(client: redis.Redis, date: str, task_id: str) -> None:
    """A task that had already finished its day came back (at-least-once delivery): counted in its record
    (``GET /tasks/{id}`` shows it came back and was let go), its lock released, nothing run."""
    client.hincrby(keys.task_meta(task_id), "redeliveries", 1)
    release(client, date, task_id)
