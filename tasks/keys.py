"""Redis key, stream and channel names: the one place they are spelled (docs/architecture.md, "The contract:
Redis names, events, errors").

No key carries patient data: patients appear only as ``hpid``, a keyed HMAC of the Tebra patient id.
"""

from __future__ import annotations

from typing import Any

BREAKER = "cb:tebra"
BREAKER_FORCE_OPEN = "cb:force_open"
PROVIDERS_CACHE = "cache:providers"
TEBRA_CREDENTIALS = "tebra:credentials"  # the credentials latch (tasks/credentials_latch.py)
TEBRA_CREDENTIALS_TRIAL = "tebra:credentials:trial"  # lease of the one call that tries new credentials
THROTTLES_REFRESHED = "throttle:tebra:refreshed"  # claim of the periodic GetThrottles (TTL: the period)
TEBRA_CHECK = "tebra:check"  # the last `make check-tebra` report (JSON, no PHI)
AGENT_UPDATES = "agent_updates"
TASK_RESULTS = "task_results"
AUDIT = "audit"
EVENTS_CHANNEL = "events"


def events_channel(client: Any) -> str:
    """The pub/sub channel of the events in ``client``'s database.

    Pub/sub channels belong to the whole server, not to a database: two deployments (or test suites) on one
    Redis in different dbs would receive each other's events, with stream ids that mean nothing in their own
    stream. So the channel is ``events`` on db 0 (the contract's name, docs/architecture.md) and
    ``events:<db>`` on any other db.
    """
    db = int(client.connection_pool.connection_kwargs.get("db") or 0)
    return EVENTS_CHANNEL if db == 0 else f"{EVENTS_CHANNEL}:{db}"


def appointments(date: str) -> str:
    """Hash of appointment id -> appointment JSON for one clinic day (YYYY-MM-DD)."""
    return f"appointments:{date}"


def patient(hpid: str, date: str) -> str:
    """Hash holding one patient's flow entry for one clinic day."""
    return f"patient:{hpid}:{date}"


def appointment_index(appointment_id: str) -> str:
    """String ``{"date", "modified", "seen"}``: the day an appointment is on, by its Tebra id (a Tebra
    appointment id is no patient data); how a move between two days is recognised
    (tasks/sync/reconcile.py)."""
    return f"appointment:{appointment_id}"


WATCH_STATE = "watch:tebra"  # hash: the watch's cursor, last runs and the Tebra clock it measured
WATCH_LEASE = "watch:lease"  # SET NX PX: the one watch running now (its run id)
SYNC_SWEEP = "sync:sweep"  # hash: task id -> when the sweep first missed its message (tasks/sync/sweep.py)
SYNC_SWEEP_LEASE = "sync:sweep:lease"  # SET NX PX: the one sweep of an interval
TEBRA_CLOCK = "tebra:clock"  # hash: how far Tebra's LastModifiedDate stamps run behind ours (measured bounds)


def patients_index(date: str) -> str:
    """Set of the hpids that have a flow entry on one clinic day."""
    return f"patients:{date}"


def sync_status(date: str) -> str:
    """Hash with the last sync of one clinic day."""
    return f"sync:status:{date}"


def sync_lock(date: str) -> str:
    """SET NX EX lock holding the task id of the sync queued or running for one date."""
    return f"sync:lock:{date}"


def task_meta(task_id: str) -> str:
    """Hash with what the API reports about one task (action, date, state, summary); no PHI."""
    return f"task:{task_id}"


def throttle(operation: str) -> str:
    """The shared pacing slot of one Tebra operation across every worker process."""
    return f"throttle:tebra:{operation}"


def throttle_intervals() -> str:
    """Hash of Tebra operation -> live interval in ms, as read from GetThrottles."""
    return "throttle:tebra:intervals"


WORKERS_ALIVE = "workers:alive"  # sorted set: worker hostname -> last heartbeat (unix seconds)


def patient_details(hpid: str) -> str:
    """String holding one patient's details from GetPatient (sealed JSON), cached across days."""
    return f"patient:details:{hpid}"


def details_lock(date: str, hpid: str) -> str:
    """SET NX EX marker of a ``patients.fetch_details`` task queued or running for one patient and day."""
    return f"details:lock:{date}:{hpid}"
