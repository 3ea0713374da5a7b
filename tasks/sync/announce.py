"""What a write of Tebra's rows changed, announced: each patient status Tebra moved
(``patient_status_changed``), each entry flagged instead (``patient_conflict``), and ``schedule_synced`` for a
day a read changed without syncing it (an appointment moved out of it, or the watch's poll).

The status before and the version after come from the merge script itself (tasks/sync/store.py), so a clinic
change landing just before or after the write is announced by its own event, in the true order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.client import Pipeline

from tasks import events
from tasks.events import EventPublisher
from tasks.sync.reconcile import Applied, write_day
from tasks.sync.store import ScheduleStore, WriteCounts


def queue_status_moves(pipe: Pipeline, publisher: EventPublisher, date: str, counts: WriteCounts) -> None:
    """Queue one ``patient_status_changed`` per status a sync changed, as the merge script left it, and one
    ``patient_conflict`` per entry it flagged instead (docs/board.md, "When Tebra and the clinic
    disagree")."""
    for move in counts.changed_statuses:
        if move.flagged:
            conflict = {"kind": "status", "status": move.tebra_status}
            flagged = {"date": date, "hpid": move.hpid, "status": move.status, "conflict": conflict}
            publisher.publish_on(pipe, events.PATIENT_CONFLICT, flagged)
            continue
        data = {
            "date": date,
            "hpid": move.hpid,
            "status": move.status,
            "previous": move.previous,
            "version": move.version,
            "room": move.room,
        }
        publisher.publish_on(pipe, events.PATIENT_STATUS_CHANGED, data)


def write_day_announced(
    client: redis.Redis,
    store: ScheduleStore,
    publisher: EventPublisher,
    date: str,
    appointments: Sequence[dict[str, Any]],
    *,
    full: bool = True,
) -> WriteCounts:
    """``store.write_day`` plus one ``patient_status_changed`` per status the sync changed.

    The status before and the version after come from the merge script itself, so a clinic change landing
    just before or after the write is announced by its own event, in the true order.
    """
    counts = write_day(store, date, appointments, full=full)
    if counts.changed_statuses:
        pipe = client.pipeline(transaction=False)
        queue_status_moves(pipe, publisher, date, counts)
        pipe.execute()
    return counts


def announce_other_days(
    pipe: Pipeline, publisher: EventPublisher, applied: Applied, announced: set[str], mode: str, by: str
) -> None:
    """A day this read changed without syncing it (an appointment moved out of it): its status moves and
    one ``schedule_synced`` naming the read that changed it, so its board follows."""
    for day, counts in applied.counts.items():
        if day in announced or not counts.changed_anything:
            continue
        announce_day(pipe, publisher, day, counts, {"mode": mode, "run_by": by})


def announce_day(
    pipe: Pipeline, publisher: EventPublisher, day: str, counts: WriteCounts, extra: dict[str, Any]
) -> None:
    """One day's status moves and flags, and its ``schedule_synced`` (counts, no PHI)."""
    queue_status_moves(pipe, publisher, day, counts)
    publisher.publish_on(pipe, events.SCHEDULE_SYNCED, {"date": day, "counts": counts.as_dict(), **extra})
