"""The sweep: an accepted sync whose broker message is gone is sent again.

A sync is accepted once its day is claimed (``queued``, its lock held) and its message is on the broker.
Redis moves a message in steps that are not one transaction: a worker pops it (BRPOP) and records it as
unacknowledged in a second round trip. A worker killed between the two, a Redis server that stops between
them, or a primary that dies before its replica has the record, leaves the day ``queued`` or ``running``
under a lock no message will ever serve; a new request for that day would be deduplicated to it until the
lock expires (SYNC_LOCK_TTL_S), and nothing would say why.

Every SYNC_SWEEP_INTERVAL_S beat sends ``schedule.sweep``, which reads the days that hold a sync lock and
the task ids the broker holds for the sync queue (waiting, or reserved and unacknowledged: a running task
and a retry waiting out its countdown are there too; tasks/broker_transport.py). A day whose task is in
neither is noted (``sync:sweep``); found missing again on a sweep at least one interval later, its message
is sent again under the same task id. Two sightings an interval apart keep a message that is between its
pop and its unacknowledged record (milliseconds) from being taken for lost. A ``running`` day is not
resent before TASK_TIME_LIMIT_S has passed since it started: by then no worker can still be running it.

Sending again is safe: the task's start script runs a day only while the day is still its own and not
finished, and a finished task delivered again is counted and let go (tasks/sync/lifecycle.py). Dates,
task ids and states only: no PHI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import redis

from tasks import keys
from tasks.sync import lifecycle

log = logging.getLogger(__name__)

# The states in which a day's sync still needs a message on the broker.
_WAITING = frozenset({lifecycle.QUEUED, lifecycle.RUNNING, lifecycle.RETRYING, lifecycle.DEFERRED})


@dataclass(frozen=True)
class Pending:
    """A day whose sync is accepted and not finished: its date, its task id, its state and since when (unix
    seconds) it has been in that state as far as the status says."""

    date: str
    task_id: str
    state: str
    since: float


@dataclass(frozen=True)
class SweepReport:
    """What one sweep saw: the days it checked, those it found missing (first sighting) and those it sent
    again. Dates and ids only."""

    checked: int
    missing: tuple[str, ...]
    resent: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {"checked": self.checked, "missing": list(self.missing), "resent": list(self.resent)}


def pending_days(client: redis.Redis) -> list[Pending]:
    """Every day that holds a sync lock and whose own task still has to run it.

    A day another task took into its fetch (``run_by``, a coalesced sync) is that task's: it is checked
    through that task's own day. A queued day's ``run_by`` is an earlier run's and does not count.
    """
    locks = sorted(client.scan_iter(match=keys.sync_lock("*"), count=500))
    if not locks:
        return []
    pipe = client.pipeline(transaction=False)
    for lock in locks:
        pipe.get(lock)
        pipe.hmget(
            keys.sync_status(_date_of(lock)), "task_id", "state", "run_by", "requested_at", "started_at"
        )
    replies = pipe.execute()
    found = []
    for lock, holder, status in zip(locks, replies[::2], replies[1::2], strict=True):
        task_id, state, run_by, requested_at, started_at = status
        if not holder or task_id != holder or state not in _WAITING:
            continue
        if state != lifecycle.QUEUED and run_by and run_by != holder:
            continue
        stamp = requested_at if state == lifecycle.QUEUED else (started_at or requested_at)
        found.append(Pending(_date_of(lock), holder, state, _unix(stamp)))
    return found


def take_turn(client: redis.Redis, interval_s: float) -> bool:
    """Whether this sweep is the one of its interval (two beats, or a late tick, sweep once)."""
    return bool(client.set(keys.SYNC_SWEEP_LEASE, "1", nx=True, px=max(int(interval_s * 1000) - 500, 500)))


def sweep(
    client: redis.Redis,
    held: Callable[[], set[str]],
    resend: Callable[[str, str], None],
    *,
    interval_s: float,
    running_limit_s: float,
    now: float | None = None,
) -> SweepReport:
    """One sweep: note the pending days whose task the broker does not hold; send again those noted at
    least ``interval_s`` ago (and, when ``running``, started over ``running_limit_s`` ago).

    ``held`` reads the broker's task ids (after the days, so a message that moved on in between is not
    missed: a sync finished meanwhile is simply no longer pending next time); ``resend(date, task_id)``
    sends one message.
    """
    now = time.time() if now is None else now
    days = pending_days(client)
    present = held() if days else set()
    missing = {day.task_id: day for day in days if day.task_id not in present}
    noted = {task_id: float(at) for task_id, at in client.hgetall(keys.SYNC_SWEEP).items()}
    first_seen, resent = [], []
    for task_id, day in sorted(missing.items(), key=lambda item: item[1].date):
        seen_at = noted.get(task_id)
        if seen_at is None:
            first_seen.append(day)
            continue
        if now - seen_at < interval_s:
            continue
        if day.state == lifecycle.RUNNING and now - day.since < running_limit_s:
            continue
        resend(day.date, task_id)
        lifecycle.resent(client, day.date, task_id)
        resent.append(day)
    # Forgotten: the notes of tasks found again, and of those just sent again (one round trip for all).
    forget = [task_id for task_id in noted if task_id not in missing] + [day.task_id for day in resent]
    _note(client, first_seen, forget=forget, now=now)
    if first_seen:
        log.info("sync messages not on the broker; checked again next sweep", extra={"days": len(first_seen)})
    return SweepReport(len(days), tuple(d.date for d in first_seen), tuple(d.date for d in resent))


def _note(client: redis.Redis, seen: Iterable[Pending], *, forget: list[str], now: float) -> None:
    pipe = client.pipeline(transaction=False)
    for day in seen:
        pipe.hset(keys.SYNC_SWEEP, day.task_id, repr(now))
    if forget:
        pipe.hdel(keys.SYNC_SWEEP, *forget)
    pipe.execute()


def _date_of(lock: str) -> str:
    return lock.rsplit(":", 1)[1]


def _unix(stamp: str | None) -> float:
    """An ISO UTC stamp as the status writes it; 0 (long ago) when there is none."""
    if not stamp:
        return 0.0
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
