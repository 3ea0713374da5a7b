"""What a full read of Tebra may do to a stored day: rows it set aside, and reads that come back empty.

A full read makes the stored day exactly Tebra's, deletions included; so one bad reply could wipe a day. Two
guards (docs/tebra.md, "Bad days"):

- **Rows set aside** (:func:`rejected_by_day`): a row the gateway could not map is counted per day
  (``rows_rejected`` in the day's status), logged with its appointment id only; the others are stored.
- **A suspicious empty read never deletes** (:func:`judge_empty`, :func:`screen_empty_days`): a full read with
  no real rows (none, or only placeholder rows) for a day that holds appointments is read again with an empty
  ``<Fields/>`` (what integrators found brings the rows back when explicit toggles get a placeholder row); if
  that is empty too, the day keeps its rows and its status says ``suspect_empty`` (with the count it kept),
  ``schedule_suspect_empty`` is announced once, and a metric counts it. Only a second consistent empty full
  read, at least ``EMPTY_CONFIRM_MINUTES`` after the first, empties the day.

:func:`judge_empty` is the decision alone, for any path that applies a full read (the first sync of a day,
the hourly full one, ``mode=full``, the watch's reconciliation): given the day's stored count, the read's
real rows, whether this is already the re-read, and since when the day has been suspect, it says apply,
re-read, or keep. Everything here is dates, ids and counts: no PHI.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from tasks import events, keys, metrics
from tasks.sync import lifecycle

log = logging.getLogger(__name__)

APPLY = "apply"  # store the read as the day's whole set (it has rows, or the day held none, or confirmed)
REREAD = "reread"  # read the day again with an empty <Fields/> before believing it
KEEP = "keep"  # keep the stored rows: the day is suspect_empty

SUSPECT_EMPTY = lifecycle.SUSPECT_EMPTY  # the day's state while a suspicious empty read is not confirmed
REASON_PLACEHOLDER = "placeholder"  # the read had only placeholder rows (an empty ID)
REASON_NONE = "none"  # the read had no rows at all

Rows = Sequence[dict[str, Any]]
Refetch = Callable[[str], tuple[Rows, int]]  # day -> (real rows, placeholder rows) of an empty-<Fields/> read


def judge_empty(
    stored: int,
    rows: int,
    *,
    placeholder_only: bool = False,
    reread: bool,
    suspect_since: datetime | None,
    now: datetime,
    confirm_after: timedelta,
) -> str:
    """Apply, re-read or keep one day's full read.

    ``stored``: the appointments the day holds now; ``rows``: the real rows the read returned for it (never
    placeholder rows); ``placeholder_only``: the read had placeholder rows and no real ones (never "a day
    with no appointments", even for a day that holds none yet); ``reread``: this read already is the re-read
    with an empty ``<Fields/>``; ``suspect_since``: when an earlier empty full read made the day suspect
    (None: it is not).
    """
    if rows > 0 or (stored == 0 and not placeholder_only):
        return APPLY
    if not reread:
        return REREAD
    if suspect_since is not None and now - suspect_since >= confirm_after:
        return APPLY  # a second consistent empty read, long enough after the first: the day is empty
    return KEEP


@dataclass(frozen=True)
class Suspect:
    """A day kept as ``suspect_empty``: how many rows it kept, why, since when, whether this is news."""

    date: str
    kept: int
    reason: str
    since: str
    first: bool  # the first suspect read of this episode (announced; later ones are not)


def rejected_by_day(rejected: Sequence[Any], own: str, days: Sequence[str]) -> dict[str, int]:
    """Rows set aside per day (each ``rejected`` item has ``.day``, None when unknown: the task's own day)."""
    counts = dict.fromkeys(days, 0)
    for row in rejected:
        day = row.day if row.day in counts else own
        counts[day] += 1
    return counts


def screen_empty_days(
    client: redis.Redis,
    by_day: Mapping[str, Rows],
    *,
    placeholders: int,
    refetch: Refetch,
    confirm_after: timedelta,
    now: datetime | None = None,
) -> tuple[dict[str, Rows], dict[str, Suspect]]:
    """The rows to apply per day, and the days to keep as suspect (left out of the first).

    Costs nothing for a day with rows; an empty day costs one HLEN (with the day's suspect mark), and when it
    holds rows or the read had only placeholder rows, one re-read.
    """
    moment = now or datetime.now(UTC)
    apply: dict[str, Rows] = dict(by_day)
    suspects: dict[str, Suspect] = {}
    empty = [day for day, rows in by_day.items() if not rows]
    if not empty:
        return apply, suspects
    pipe = client.pipeline(transaction=False)
    for day in empty:
        pipe.hlen(keys.appointments(day))
        pipe.hget(keys.sync_status(day), "suspect_empty_since")
    answers = pipe.execute()
    for index, day in enumerate(empty):
        stored, since_raw = int(answers[2 * index]), answers[2 * index + 1]
        since = events.parse_instant(since_raw)
        judge = functools.partial(
            judge_empty, stored, suspect_since=since, now=moment, confirm_after=confirm_after
        )
        if judge(0, placeholder_only=placeholders > 0, reread=False) == APPLY:
            continue
        rows, more_placeholders = refetch(day)
        verdict = judge(len(rows), placeholder_only=more_placeholders > 0 and not rows, reread=True)
        if verdict == APPLY:
            apply[day] = rows
            continue
        del apply[day]
        reason = REASON_PLACEHOLDER if placeholders or more_placeholders else REASON_NONE
        first = since is None
        suspects[day] = Suspect(
            day, stored, reason, since_raw if since_raw else events.iso_utc(moment), first
        )
    return apply, suspects


def finish_suspect(
    ctx: Any, suspect: Suspect, task_id: str, *, own_task: str, mode: str, finished_at: str
) -> dict[str, Any]:
    """Record, announce (once per episode) and release one day kept as ``suspect_empty``; its summary.

    The day's last successful and last full sync are left as they were: its next sync is a full read again,
    the one that may confirm the day empty.
    """
    summary: dict[str, Any] = {
        "date": suspect.date,
        "task_id": task_id,
        "mode": mode,
        "state": SUSPECT_EMPTY,
        "kept": suspect.kept,
        "reason": suspect.reason,
        "suspect_since": suspect.since,
    }
    if task_id != own_task:
        summary["run_by"] = own_task
    log.warning(
        "tebra read no appointments for a day that holds some; kept them (suspect_empty)",
        extra={"date": suspect.date, "task_id": task_id, "kept": suspect.kept, "reason": suspect.reason},
    )
    metrics.count_suspect_empty()
    pipe = ctx.redis.pipeline(transaction=False)
    lifecycle.queue_suspect(pipe, ctx, summary, first=suspect.first, finished_at=finished_at)
    pipe.execute()
    return summary
