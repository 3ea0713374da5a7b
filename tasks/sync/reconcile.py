"""Reconciliation by appointment id: every read of Tebra, whatever its shape, leaves each appointment on the
one day Tebra now says, and each day's board with exactly the patients who still have an appointment there.

A read is a set of :class:`DayRead` (the rows of each day it covered, and whether it covered that day in
full). Writing it (:meth:`Reconciler.apply`) is one optimistic transaction (WATCH, reads, MULTI/EXEC, retried
when another writer got in between) that:

- skips a row older than the version already stored (its ``last_modified`` is earlier than the one the
  index holds): a slow read never undoes what a later one wrote;
- moves an appointment whose start is on another day than the index says: it leaves the old day's
  ``appointments:{date}`` and joins the new one's, in the same EXEC (one atomic step per pair of days);
- on a day read in full, removes the stored appointments Tebra no longer has, except those stored by a read
  that began after this one (a booking this read could not have seen);
- recomputes the board entry of every patient it touched, from all of that patient's appointments on the
  day; a patient with none left leaves the board (``patient_removed``) unless the clinic had already moved
  them past ``confirmed`` locally, in which case the entry stays, flagged ``tebra_conflict`` with what Tebra
  now says (``patient_conflict``), until the clinic's next change to it.

The index ``appointment:{id}`` holds ``{"date", "modified", "seen"}``: the day the appointment is on, its
Tebra LastModifiedDate, and when the read that first stored this version began (ISO UTC). It is rewritten
only when the version changes, so the same read twice changes no byte. ``seen`` also bounds how far behind
Tebra's LastModifiedDate stamps run (tasks/sync/clock.py).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from tasks import events, keys
from tasks.events import utc_now_iso
from tasks.sync.departure import DELETED, MOVED, Departures
from tasks.sync.store import ScheduleStore, WriteCounts, canonical, counts_of

log = logging.getLogger(__name__)

WRITE_ATTEMPTS = 8  # a transaction retried this often met a writer of the same days every time: give up


@dataclass(frozen=True)
class DayRead:
    """The rows a read found starting on ``date``; ``full``: the read asked for the whole day (so an
    appointment stored for the day and absent here is gone from it)."""

    date: str
    rows: Sequence[dict[str, Any]]
    full: bool


@dataclass(frozen=True)
class Indexed:
    """What the index says of one appointment."""

    date: str
    modified: str
    seen: str

    @classmethod
    def parse(cls, raw: str | None) -> Indexed | None:
        if not raw:
            return None
        value = orjson.loads(raw)
        return cls(
            str(value.get("date") or ""), str(value.get("modified") or ""), str(value.get("seen") or "")
        )

    def dumps(self) -> str:
        return canonical({"date": self.date, "modified": self.modified, "seen": self.seen})


@dataclass
class DayPlan:
    """One day's part of the transaction, and what it is counted as."""

    date: str
    full: bool
    current: dict[str, str]
    sealed: dict[str, str] = field(default_factory=dict)
    changed: dict[str, str] = field(default_factory=dict)
    moved_in: list[str] = field(default_factory=list)
    leaving: dict[str, str] = field(default_factory=dict)  # appointment id -> moved | deleted
    entries: dict[str, tuple[list[str], str]] = field(default_factory=dict)
    leavers: dict[str, dict[str, Any]] = field(default_factory=dict)  # hpid -> why (reason, appointment)
    members: set[str] = field(default_factory=set)  # the day's board index as read
    merge_at: int | None = None
    leave_at: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class ChangeSeen:
    """A new version of an appointment we held before: its Tebra stamp, and the latest moment we know the
    old version was still current (the start of the read that stored it, or of a later full read)."""

    modified: str
    old_seen: str


@dataclass
class Applied:
    """What one read changed: the counts of each day (in the order given, then days it moved rows out of),
    the patients that left or were flagged, and the changes seen (for the clock measurement)."""

    counts: dict[str, WriteCounts]
    stale: int
    changes: list[ChangeSeen]


def is_older(incoming: str | None, stored: str | None) -> bool:
    """True when ``incoming`` is a LastModifiedDate strictly before ``stored`` (both known)."""
    new, old = events.parse_instant(incoming), events.parse_instant(stored)
    return new is not None and old is not None and new < old


class Reconciler:
    """Writes reads of Tebra into the store, reconciled by appointment id."""

    def __init__(self, client: redis.Redis, store: ScheduleStore, *, sender: str, maxlen: int) -> None:
        self._redis = client
        self._store = store
        self._sender = sender
        self._maxlen = maxlen
        self._departures = Departures(client, sender=sender, maxlen=maxlen)

    def apply(
        self,
        reads: Sequence[DayRead],
        *,
        read_started_at: str,
        fetched: Collection[str] = (),
        keep: Collection[str] = (),
    ) -> Applied:
        """Write ``reads`` (a read that began at ``read_started_at``, ISO UTC); ``fetched`` are the ids of
        every row the read returned, including rows on days it does not write (a move out of them); ``keep``
        the ids of rows it returned but could not read (set aside: their stored copy stays as it is)."""
        for _ in range(WRITE_ATTEMPTS):
            try:
                return self._apply_once(reads, read_started_at, fetched, frozenset(keep))
            except redis.WatchError:
                continue
        raise RuntimeError("the schedule write met a concurrent writer of the same days every time")

    def _apply_once(
        self, reads: Sequence[DayRead], read_started_at: str, fetched: Collection[str], keep: frozenset[str]
    ) -> Applied:
        incoming: dict[str, tuple[str, dict[str, Any]]] = {}
        for read in reads:
            for row in read.rows:
                incoming[str(row["id"])] = (read.date, row)
        full_days = {read.date: read.full for read in reads}
        if not full_days:  # an incremental poll that found nothing: nothing to write
            return Applied({}, 0, [])
        with self._redis.pipeline(transaction=True) as pipe:
            # One WATCH and one read for the index entries and the days read (three round trips in all,
            # with the EXEC); the days a row moved out of, known only from the index, cost one more each way.
            index_keys = [keys.appointment_index(appt_id) for appt_id in incoming]
            pipe.watch(*index_keys, *(keys.appointments(date) for date in full_days))
            raw_index, days = self._read(index_keys, list(full_days))
            known: dict[str, Indexed] = {}
            for appt_id, raw in zip(incoming, raw_index, strict=True):
                found = Indexed.parse(raw)
                if found is not None:
                    known[appt_id] = found
            stale = {
                appt_id
                for appt_id, (_, row) in incoming.items()
                if appt_id in known and is_older(row.get("last_modified"), known[appt_id].modified)
            }
            applied = {appt_id: value for appt_id, value in incoming.items() if appt_id not in stale}
            moved_from = {
                appt_id: known[appt_id].date
                for appt_id, (date, _) in applied.items()
                if appt_id in known and known[appt_id].date and known[appt_id].date != date
            }
            extra = [date for date in dict.fromkeys(moved_from.values()) if date not in full_days]
            if extra:
                pipe.watch(*(keys.appointments(date) for date in extra))
                days.update(self._read([], extra)[1])
            plans = {
                date: DayPlan(date, full_days.get(date, False), current, members=members)
                for date, (current, members, _) in days.items()
            }
            last_full = {date: last for date, (_, _, last) in days.items()}
            candidates = [appt_id for appt_id in self._removal_candidates(plans, applied, moved_from)
                          if appt_id not in keep]  # fmt: skip
            seen_of = self._seen_of(pipe, candidates)
            changes = self._plan(
                plans, applied, known, moved_from, fetched, seen_of, read_started_at, last_full, keep
            )
            pipe.multi()
            self._queue(pipe, plans, applied, known, read_started_at)
            results = pipe.execute()
        counts = {
            date: counts_of(
                plan.sealed,
                plan.current,
                plan.changed,
                list(plan.leaving),
                plan.entries,
                [] if plan.merge_at is None else results[plan.merge_at],
                moved_in=len(plan.moved_in),
                moved_out=sum(1 for why in plan.leaving.values() if why == MOVED),
                left=[str(results[at]) for _, at in plan.leave_at],
            )
            for date, plan in plans.items()
        }
        return Applied(counts, len(stale), changes)

    def _read(
        self, index_keys: list[str], dates: list[str]
    ) -> tuple[list[str | None], dict[str, tuple[dict[str, str], set[str], str]]]:
        """The index entries, and each day's appointments, board members and last full read, in one round
        trip."""
        pipe = self._redis.pipeline(transaction=False)
        if index_keys:
            pipe.mget(index_keys)
        for date in dates:
            pipe.hgetall(keys.appointments(date))
            pipe.smembers(keys.patients_index(date))
            pipe.hget(keys.sync_status(date), "last_full_started_at")
        replies = pipe.execute()
        raw_index = replies.pop(0) if index_keys else []
        days = {
            date: (replies[3 * n], set(replies[3 * n + 1]), str(replies[3 * n + 2] or ""))
            for n, date in enumerate(dates)
        }
        return raw_index, days

    def _removal_candidates(
        self,
        plans: dict[str, DayPlan],
        applied: dict[str, tuple[str, dict[str, Any]]],
        moved_from: dict[str, str],
    ) -> list[str]:
        """Stored appointments of full days that this read did not return for that day (and did not move)."""
        out = []
        for date, plan in plans.items():
            if not plan.full:
                continue
            for appt_id in plan.current:
                landed = applied.get(appt_id)
                if (landed is None or landed[0] != date) and appt_id not in moved_from:
                    out.append(appt_id)
        return out

    def _seen_of(self, pipe: Any, candidates: list[str]) -> dict[str, Indexed]:
        if not candidates:
            return {}
        index_keys = [keys.appointment_index(appt_id) for appt_id in candidates]
        pipe.watch(*index_keys)
        return {
            appt_id: found
            for appt_id, raw in zip(candidates, self._redis.mget(index_keys), strict=True)
            if (found := Indexed.parse(raw)) is not None
        }

    def _plan(
        self,
        plans: dict[str, DayPlan],
        applied: dict[str, tuple[str, dict[str, Any]]],
        known: dict[str, Indexed],
        moved_from: dict[str, str],
        fetched: Collection[str],
        seen_of: dict[str, Indexed],
        read_started_at: str,
        last_full: dict[str, str],
        keep: frozenset[str],
    ) -> list[ChangeSeen]:
        """Fill each day's plan: sealed rows, changes, appointments leaving, patient entries and leavers."""
        seal, hpid_of = self._store.sealers()
        changes: list[ChangeSeen] = []
        for appt_id, (date, row) in applied.items():
            record = canonical(self._store.seal_appointment(row, date, seal, hpid_of))
            plan = plans[date]
            plan.sealed[appt_id] = record
            if plan.current.get(appt_id) != record:
                plan.changed[appt_id] = record
            if appt_id in moved_from:
                plan.moved_in.append(appt_id)
            old = known.get(appt_id)
            if old is not None and old.modified and old.modified != (row.get("last_modified") or ""):
                day_full = last_full.get(old.date, "")
                changes.append(ChangeSeen(str(row.get("last_modified") or ""), max(old.seen, day_full)))
        for appt_id, old_date in moved_from.items():
            if appt_id in plans[old_date].current:
                plans[old_date].leaving[appt_id] = MOVED
        for date, plan in plans.items():
            if not plan.full:
                continue
            for appt_id in plan.current:
                if appt_id in plan.sealed or appt_id in plan.leaving or appt_id in keep:
                    continue
                found = seen_of.get(appt_id)
                if found is not None and found.seen >= read_started_at:
                    continue  # stored by a read that began after this one: this read could not see it
                if found is not None and found.date and found.date != date:
                    plan.leaving[appt_id] = MOVED  # the index already follows it elsewhere
                else:
                    plan.leaving[appt_id] = MOVED if appt_id in fetched else DELETED
        for plan in plans.values():
            self._plan_patients(plan, applied, seal, hpid_of)
        return changes

    def _plan_patients(self, plan: DayPlan, applied: dict[str, Any], seal: Any, hpid_of: Any) -> None:
        """The entries to merge (every patient of a full day; the touched ones otherwise, from all their
        appointments that day) and the patients left with none."""
        remaining = {appt_id: value for appt_id, value in plan.current.items() if appt_id not in plan.leaving}
        remaining.update(plan.sealed)
        hpid_by_appt = {
            appt_id: orjson.loads(value).get("hpid") or "" for appt_id, value in remaining.items()
        }
        leaving_hpids: dict[str, str] = {}
        for appt_id in plan.leaving:
            gone = orjson.loads(plan.current[appt_id]).get("hpid") or ""
            if gone:
                leaving_hpids.setdefault(gone, appt_id)
        if plan.full:
            touched = set(hpid_by_appt.values())
        else:
            touched = {orjson.loads(value).get("hpid") or "" for value in plan.sealed.values()}
            touched |= set(leaving_hpids)
        touched.discard("")
        rows = []
        for appt_id, value in remaining.items():
            if hpid_by_appt[appt_id] not in touched:
                continue
            if appt_id in plan.sealed:
                rows.append(applied[appt_id][1])
            else:
                rows.append(self._store.open_appointment(value, plan.date))
        plan.entries = self._store.patient_entries(plan.date, rows, seal, hpid_of)
        for gone_hpid, appt_id in leaving_hpids.items():
            if gone_hpid not in plan.entries:
                plan.leavers[gone_hpid] = {"reason": plan.leaving[appt_id], "appointment_id": appt_id}
        if plan.full:
            # Board entries whose patient has no appointment left that day at all (written before this index
            # existed, or kept flagged earlier): the same rule (a flagged entry is kept as it is).
            for member in sorted(plan.members - set(plan.entries)):
                plan.leavers.setdefault(member, {"reason": DELETED, "appointment_id": ""})

    def _queue(
        self,
        pipe: Any,
        plans: dict[str, DayPlan],
        applied: dict[str, tuple[str, dict[str, Any]]],
        known: dict[str, Indexed],
        read_started_at: str,
    ) -> None:
        ttl = self._store.ttl_s
        now = utc_now_iso()
        for appt_id, (date, row) in applied.items():
            modified = str(row.get("last_modified") or "")
            old = known.get(appt_id)
            if old is None or old.date != date or old.modified != modified:
                pipe.set(
                    keys.appointment_index(appt_id), Indexed(date, modified, read_started_at).dumps(), ex=ttl
                )
            elif plans[date].full:  # an entry lives as long as its day: a full read keeps both alive
                pipe.expire(keys.appointment_index(appt_id), ttl)
        for date, plan in plans.items():
            day_key = keys.appointments(date)
            if plan.changed:
                pipe.hset(day_key, mapping=plan.changed)
            if plan.leaving:
                pipe.hdel(day_key, *plan.leaving)
                for appt_id, why in plan.leaving.items():
                    if why == DELETED and appt_id not in applied:
                        pipe.delete(keys.appointment_index(appt_id))
            if plan.sealed or plan.current:
                pipe.expire(day_key, ttl)
            if plan.entries:
                plan.merge_at = len(pipe)
                self._store.queue_merge(pipe, date, plan.entries)
            for gone_hpid, leaver in sorted(plan.leavers.items()):
                plan.leave_at.append((gone_hpid, len(pipe)))
                self._departures.queue(pipe, date, gone_hpid, leaver, applied, now)


def write_day(
    store: ScheduleStore,
    date: str,
    rows: Sequence[dict[str, Any]],
    *,
    full: bool = True,
    sender: str = "worker",
    maxlen: int = 10000,
) -> WriteCounts:
    """One day's read, written and reconciled now (tests, seeding, the simplest callers)."""
    reconciler = Reconciler(store.redis, store, sender=sender, maxlen=maxlen)
    applied = reconciler.apply([DayRead(date, rows, full)], read_started_at=utc_now_iso())
    return applied.counts[date]
