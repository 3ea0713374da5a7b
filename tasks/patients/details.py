"""Patient details beyond the appointment (date of birth), fetched after a day's sync, one patient at a time.

After ``schedule_synced`` the sync task calls :func:`enqueue_day` and returns: the board already shows every
appointment with the patient's name. For each patient of the day whose details are missing it queues
``patients.fetch_details(date, hpid)`` on the ``details`` queue; the worker resolves the hpid to Tebra's
patient id from the day's flow entry (task arguments never carry the raw id or any PHI), reads
``patient:details:{hpid}`` (sealed, kept ``RETENTION_DAYS``, shared by every day the patient comes) or else
calls GetPatient through the shared throttle (250 ms pace), writes the sealed ``dob`` and
``details=complete`` into ``patient:{hpid}:{date}`` and announces ``patient_details_updated``. A patient who
cannot be fetched is still on the board, marked ``details=incomplete``.

Plain functions with their collaborators passed in; tasks/patients/job.py is the Celery shell. The fields
written here (dob, details, details_at) are not among those a sync merges (tasks/sync/store.py), so a later
sync leaves them as they are and stays idempotent.
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

from tasks import events, keys, names
from tasks.celery_factory import DETAILS_QUEUE
from tasks.events import EventPublisher
from tasks.phi import DETAILS_FIELD, PhiCipher, open_patient, patient_binding, seal_patient

log = logging.getLogger(__name__)

DETAILS_LOCK_TTL_S = 900  # a queued lookup older than this is presumed lost; the next sync queues it again
INCOMPLETE_RETRY_AFTER_S = 3600  # a patient Tebra could not give us is asked again at most hourly

# Outcomes of one lookup (the task's result, and the entry's ``details``; no PHI).
COMPLETE = "complete"
INCOMPLETE = "incomplete"
GONE = "gone"  # the day's entry no longer exists: nothing to write


class PatientSource(Protocol):
    """What a lookup needs of the Tebra gateway."""

    def get_patient(self, patient_id: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class DetailsContext:
    """The collaborators of one lookup."""

    redis: redis.Redis
    cipher: PhiCipher
    publisher: EventPublisher
    source: PatientSource
    cache_ttl_s: int


# KEYS[1] patient key. ARGV: dob (sealed or ""), details (complete|incomplete), details_at. Writes only into
# an entry that exists (a day that expired is not brought back by a late lookup); 1 when written, 0 when gone.
_WRITE_DETAILS_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'dob', ARGV[1]) end
redis.call('HSET', KEYS[1], 'details', ARGV[2], 'details_at', ARGV[3])
return 1
"""


# -- the day's flow entries -------------------------------------------------------------------------------


def patient_id(client: redis.Redis, cipher: PhiCipher, date: str, hpid: str) -> str | None:
    """The raw Tebra patient id behind ``hpid`` on ``date``, or None when there is no such entry."""
    sealed = client.hget(keys.patient(hpid, date), "patient_id")
    return open_patient(cipher.open, hpid, date, "patient_id", sealed) or None


def details_states(client: redis.Redis, date: str) -> dict[str, tuple[str, str]]:
    """hpid -> (details, details_at) for every flow entry of the day ("" where none was fetched yet)."""
    hpids = sorted(client.smembers(keys.patients_index(date)))
    pipe = client.pipeline(transaction=False)
    for entry_hpid in hpids:
        pipe.hmget(keys.patient(entry_hpid, date), ["details", "details_at"])
    return {
        entry_hpid: (details or "", details_at or "")
        for entry_hpid, (details, details_at) in zip(hpids, pipe.execute(), strict=True)
    }


def write_details(
    client: redis.Redis, cipher: PhiCipher, date: str, hpid: str, *, dob: str | None, complete: bool, now: str
) -> bool:
    """Seal ``dob`` into the day's flow entry and mark its details; False when the entry is gone."""
    sealed = seal_patient(cipher.seal, hpid, date, "dob", dob)
    state = COMPLETE if complete else INCOMPLETE
    written = client.register_script(_WRITE_DETAILS_LUA)(
        keys=[keys.patient(hpid, date)], args=[sealed or "", state, now]
    )
    return bool(written)


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
    tebra_id = patient_id(ctx.redis, ctx.cipher, date, hpid)
    if tebra_id is None:
        return GONE
    details = read_cached(ctx, hpid)
    if details is None:
        patient = ctx.source.get_patient(tebra_id)
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
    if not write_details(
        ctx.redis, ctx.cipher, date, hpid, dob=dob, complete=complete, now=events.utc_now_iso()
    ):
        return GONE
    state = COMPLETE if complete else INCOMPLETE
    ctx.publisher.publish(events.PATIENT_DETAILS_UPDATED, {"date": date, "hpid": hpid, "details": state})
    return state


# -- after a sync -----------------------------------------------------------------------------------------


def wanted(states: dict[str, tuple[str, str]], now: datetime) -> list[str]:
    """The hpids to look up: never fetched, or incomplete and last tried over an hour ago."""
    out = []
    for hpid, (details, details_at) in sorted(states.items()):
        if details == COMPLETE:
            continue
        if details == INCOMPLETE and details_at:
            tried = datetime.fromisoformat(details_at.replace("Z", "+00:00"))
            if (now - tried).total_seconds() < INCOMPLETE_RETRY_AFTER_S:
                continue
        out.append(hpid)
    return out


def enqueue_day(client: redis.Redis, date: str, send: Callable[[str, str], None]) -> int:
    """Queue one lookup per patient of ``date`` that needs one and has none queued; returns how many."""
    hpids = wanted(details_states(client, date), datetime.now(UTC))
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


def queue_lookups(app: Celery, enabled: bool, client: redis.Redis, date: str) -> int:
    """After a day's sync: queue its lookups on ``details`` (when PATIENT_DETAILS_ENABLED). Never fails the
    sync (a lost lookup is re-queued by the next sync, and the board shows the patient meanwhile)."""
    if not enabled:
        return 0

    def send(day: str, hpid: str) -> None:
        app.send_task(names.FETCH_DETAILS, args=[day, hpid], queue=DETAILS_QUEUE)

    try:
        return enqueue_day(client, date, send)
    except Exception as exc:
        log.warning("patient details not queued", extra={"date": date, "error": type(exc).__name__})
        return 0
