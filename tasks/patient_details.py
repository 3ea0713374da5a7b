"""Patient details beyond the appointment (date of birth), fetched after a day's sync, one patient at a time.

After ``schedule_synced`` the sync task calls :func:`enqueue_day` and returns: the board already shows every
appointment with the patient's name. For each patient of the day whose details are missing it queues
``patients.fetch_details(date, hpid)`` on the ``details`` queue; the worker resolves the hpid to Tebra's
patient id from the day's flow entry (task arguments never carry the raw id or any PHI), reads
``patient:details:{hpid}`` (sealed, kept ``RETENTION_DAYS``, shared by every day the patient comes) or else
calls GetPatient through the shared throttle (250 ms pace), writes the sealed ``dob`` and
``details=complete`` into ``patient:{hpid}:{date}`` and announces ``patient_details_updated``. A patient who
cannot be fetched is still on the board, marked ``details=incomplete``.

Plain functions with their collaborators passed in; tasks/patients.py is the Celery shell.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import redis
from celery import Celery

from config import Settings
from tasks import events, keys
from tasks.celery_factory import DETAILS_QUEUE
from tasks.events import EventPublisher
from tasks.phi import DETAILS_FIELD, PhiCipher, patient_binding
from tasks.store import DETAILS_COMPLETE, DETAILS_INCOMPLETE, ScheduleStore

log = logging.getLogger(__name__)

DETAILS_TASK = "patients.fetch_details"
DETAILS_LOCK_TTL_S = 900  # a queued lookup older than this is presumed lost; the next sync queues it again
INCOMPLETE_RETRY_AFTER_S = 3600  # a patient Tebra could not give us is asked again at most hourly

# Outcomes of one lookup (the task's result; no PHI).
COMPLETE = DETAILS_COMPLETE
INCOMPLETE = DETAILS_INCOMPLETE
GONE = "gone"  # the day's entry no longer exists: nothing to write


class PatientSource(Protocol):
    """What a lookup needs of the Tebra gateway."""

    def get_patient(self, patient_id: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class DetailsContext:
    """The collaborators of one lookup."""

    redis: redis.Redis
    store: ScheduleStore
    cipher: PhiCipher
    publisher: EventPublisher
    source: PatientSource
    cache_ttl_s: int


# -- the cache across days --------------------------------------------------------------------------------


def read_cached(ctx: DetailsContext, hpid: str) -> dict[str, Any] | None:
    """The cached details of a patient (opened), or None."""
    sealed = ctx.redis.get(keys.patient_details(hpid))
    if not sealed:
        return None
    opened = ctx.cipher.open(sealed, patient_binding(hpid, DETAILS_FIELD))
    return dict(json.loads(opened)) if opened else None


def write_cached(ctx: DetailsContext, hpid: str, details: dict[str, Any]) -> None:
    """Seal and cache what the board needs of a patient (only the date of birth today)."""
    blob = json.dumps({"dob": details.get("dob")}, sort_keys=True, separators=(",", ":"))
    ctx.redis.set(
        keys.patient_details(hpid),
        ctx.cipher.seal(blob, patient_binding(hpid, DETAILS_FIELD)) or "",
        ex=ctx.cache_ttl_s,
    )


# -- one lookup -------------------------------------------------------------------------------------------


def fetch_details(ctx: DetailsContext, date: str, hpid: str) -> str:
    """Fill one patient's details on ``date``; returns complete, incomplete or gone.

    Raises the gateway's classified errors (throttled, upstream, security, business): the task decides
    between a retry and :func:`mark_incomplete`.
    """
    patient_id = ctx.store.patient_id(date, hpid)
    if patient_id is None:
        return GONE
    details = read_cached(ctx, hpid)
    if details is None:
        patient = ctx.source.get_patient(patient_id)
        if patient is None or not patient.get("dob"):
            return mark_incomplete(ctx, date, hpid, "NOT_FOUND" if patient is None else "NO_DOB")
        details = {"dob": patient["dob"]}
        write_cached(ctx, hpid, details)
    return _store(ctx, date, hpid, dob=str(details["dob"]), complete=bool(details.get("dob")))


def mark_incomplete(ctx: DetailsContext, date: str, hpid: str, reason: str) -> str:
    """The patient stays on the board without details; announced like an arrival."""
    log.info("patient details incomplete", extra={"date": date, "hpid": hpid, "code": reason})
    return _store(ctx, date, hpid, dob=None, complete=False)


def _store(ctx: DetailsContext, date: str, hpid: str, *, dob: str | None, complete: bool) -> str:
    if not ctx.store.write_details(date, hpid, dob=dob, complete=complete, now=events.utc_now_iso()):
        return GONE
    state = DETAILS_COMPLETE if complete else DETAILS_INCOMPLETE
    ctx.publisher.publish(events.PATIENT_DETAILS_UPDATED, {"date": date, "hpid": hpid, "details": state})
    return state


# -- after a sync -----------------------------------------------------------------------------------------


def wanted(states: dict[str, tuple[str, str]], now: datetime) -> list[str]:
    """The hpids to look up: never fetched, or incomplete and last tried over an hour ago."""
    out = []
    for hpid, (details, details_at) in sorted(states.items()):
        if details == DETAILS_COMPLETE:
            continue
        if details == DETAILS_INCOMPLETE and details_at:
            tried = datetime.fromisoformat(details_at.replace("Z", "+00:00"))
            if (now - tried).total_seconds() < INCOMPLETE_RETRY_AFTER_S:
                continue
        out.append(hpid)
    return out


def enqueue_day(
    client: redis.Redis, store: ScheduleStore, date: str, send: Callable[[str, str], None]
) -> int:
    """Queue one lookup per patient of ``date`` that needs one and has none queued; returns how many."""
    hpids = wanted(store.details_states(date), datetime.now(UTC))
    if not hpids:
        return 0
    pipe = client.pipeline(transaction=False)
    for hpid in hpids:
        pipe.set(keys.details_lock(date, hpid), "1", nx=True, ex=DETAILS_LOCK_TTL_S)
    claimed = [hpid for hpid, won in zip(hpids, pipe.execute(), strict=True) if won]
    for index, hpid in enumerate(claimed):
        try:
            send(date, hpid)
        except Exception:
            # Not queued: free these markers so the next sync queues them again.
            client.delete(*(keys.details_lock(date, left) for left in claimed[index:]))
            raise
    return len(claimed)


def release(client: redis.Redis, date: str, hpid: str) -> None:
    """The lookup of ``hpid`` on ``date`` is over (done or given up): a later sync may queue it again."""
    client.delete(keys.details_lock(date, hpid))


def queue_lookups(
    app: Celery, settings: Settings, client: redis.Redis, store: ScheduleStore, date: str
) -> int:
    """After a day's sync: queue its lookups on ``details``. Never fails the sync (a lost lookup is re-queued
    by the next sync, and the board shows the patient meanwhile)."""
    if not settings.patient_details_enabled:
        return 0

    def send(day: str, hpid: str) -> None:
        app.send_task(DETAILS_TASK, args=[day, hpid], queue=DETAILS_QUEUE)

    try:
        return enqueue_day(client, store, date, send)
    except Exception as exc:
        log.warning("patient details not queued", extra={"date": date, "error": type(exc).__name__})
        return 0
