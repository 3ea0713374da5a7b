"""The patient-flow state machine (docs/tebra.md, "Patient flow").

``scheduled → confirmed → arrived → appt-prep → ready-for-md → with-doctor → seen-by-md → completed``,
with ``cancelled``, ``no-show`` and ``rescheduled`` reachable from the states before ``arrived``.
One spelling: lower case with hyphens.
"""

from __future__ import annotations

SCHEDULED = "scheduled"
CONFIRMED = "confirmed"
ARRIVED = "arrived"
APPT_PREP = "appt-prep"
READY_FOR_MD = "ready-for-md"
WITH_DOCTOR = "with-doctor"
SEEN_BY_MD = "seen-by-md"
COMPLETED = "completed"
CANCELLED = "cancelled"
NO_SHOW = "no-show"
RESCHEDULED = "rescheduled"

MAIN_PATH = (SCHEDULED, CONFIRMED, ARRIVED, APPT_PREP, READY_FOR_MD, WITH_DOCTOR, SEEN_BY_MD, COMPLETED)
ENDED_BEFORE_ARRIVAL = (CANCELLED, NO_SHOW, RESCHEDULED)
STATES = MAIN_PATH + ENDED_BEFORE_ARRIVAL
TERMINAL = frozenset({COMPLETED, *ENDED_BEFORE_ARRIVAL})

_NEXT: dict[str, tuple[str, ...]] = {
    # Confirmation is optional: a patient who never confirmed still walks in.
    SCHEDULED: (CONFIRMED, ARRIVED, *ENDED_BEFORE_ARRIVAL),
    CONFIRMED: (ARRIVED, *ENDED_BEFORE_ARRIVAL),
    ARRIVED: (APPT_PREP,),
    APPT_PREP: (READY_FOR_MD,),
    READY_FOR_MD: (WITH_DOCTOR,),
    WITH_DOCTOR: (SEEN_BY_MD,),
    SEEN_BY_MD: (COMPLETED,),
    COMPLETED: (),
    CANCELLED: (),
    NO_SHOW: (),
    RESCHEDULED: (),
}

# How far along a visit is. The three ways a visit ends before arrival rank between "confirmed" and
# "arrived": a Tebra cancellation overrides a confirmation, but never a patient the clinic has checked in;
# a Tebra check-in overrides a no-show (the patient came late).
RANKS: dict[str, int] = {
    SCHEDULED: 0,
    CONFIRMED: 1,
    CANCELLED: 2,
    NO_SHOW: 2,
    RESCHEDULED: 2,
    ARRIVED: 3,
    APPT_PREP: 4,
    READY_FOR_MD: 5,
    WITH_DOCTOR: 6,
    SEEN_BY_MD: 7,
    COMPLETED: 8,
}

# The timestamp field set when a patient enters a state.
TIMESTAMP_ON_ENTRY: dict[str, str] = {
    ARRIVED: "checkin_time",
    WITH_DOCTOR: "with_doctor_time",
    COMPLETED: "completed_time",
}
TIMESTAMP_FIELDS = TIMESTAMP_ON_ENTRY  # the name tasks/sync/store.py reads

# Tebra's ConfirmationStatus, normalised (lower case; spaces, hyphens and underscores removed).
_TEBRA_STATUS: dict[str, str] = {
    "scheduled": SCHEDULED,
    "remindersent": SCHEDULED,
    "tentative": SCHEDULED,
    "confirmed": CONFIRMED,
    "checkin": ARRIVED,
    "checkedin": ARRIVED,
    "arrived": ARRIVED,
    "roomed": APPT_PREP,
    "inroom": APPT_PREP,
    "readytobeseen": READY_FOR_MD,
    "checkout": COMPLETED,
    "checkedout": COMPLETED,
    "cancelled": CANCELLED,
    "canceled": CANCELLED,
    "noshow": NO_SHOW,
    "rescheduled": RESCHEDULED,
}


class UnknownState(ValueError):
    """A name that is not a patient-flow state."""


def _check(state: str) -> str:
    if state not in RANKS:
        raise UnknownState(f"not a patient-flow state: {state!r}")
    return state


def is_state(state: str) -> bool:
    """True when ``state`` is one of the flow states (exact spelling)."""
    return state in RANKS


def allowed_next(state: str) -> list[str]:
    """The states a patient in ``state`` may move to."""
    return list(_NEXT[_check(state)])


def can_transition(current: str, new: str) -> bool:
    """True when moving from ``current`` to ``new`` is allowed (unknown names are never allowed)."""
    return current in _NEXT and new in _NEXT[current]


def rank(state: str) -> int:
    """How far along the visit ``state`` is; a sync never lowers it (see :func:`merge_synced`)."""
    return RANKS[_check(state)]


def merge_synced(local: str | None, remote: str) -> str:
    """The state after a sync: Tebra's ``remote`` state unless it would move the patient backwards."""
    if local is None or not is_state(local):
        return _check(remote)
    return remote if rank(remote) >= rank(local) else local


def timestamp_field(state: str) -> str | None:
    """The timestamp set on entry to ``state`` (``checkin_time``, …), or None."""
    return TIMESTAMP_ON_ENTRY.get(state)


def normalise_tebra_status(raw: str | None) -> str:
    """``raw`` lower-cased without spaces, hyphens or underscores ("Check-in" → "checkin")."""
    if not raw:
        return ""
    return "".join(ch for ch in raw.lower() if ch not in " -_\t")


def flow_status_from_tebra(raw: str | None) -> tuple[str, bool]:
    """Map Tebra's ConfirmationStatus to a flow state; the flag is False for an unknown status."""
    state = _TEBRA_STATUS.get(normalise_tebra_status(raw))
    if state is None:
        return SCHEDULED, False
    return state, True
