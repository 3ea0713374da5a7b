"""What a sync counts beyond tasks and Tebra calls: ConfirmationStatus values the flow map does not know.

Tebra's ConfirmationStatus is a free string in the wire format; a value ``flow.flow_status_from_tebra`` does
not know maps to ``scheduled`` and is counted in ``clinic_relay_tebra_unknown_status_total{status}`` and
logged once per value per process, so an operator sees a new Tebra status the day it appears.

The counter is built on first use (like tasks/metrics.py): prometheus-client picks its multiprocess storage
when first imported, which the worker prepares before any task runs. The label is the normalised status
(lower case, no spaces or hyphens), cut to a short alphanumeric word: it names a status, never a patient.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tasks.metrics import PREFIX
from tasks.patients.flow import normalise_tebra_status

if TYPE_CHECKING:
    from prometheus_client import Counter

log = logging.getLogger(__name__)

UNKNOWN_STATUS = PREFIX + "tebra_unknown_status_total"  # status (normalised ConfirmationStatus)
MAX_LABELS = 50  # distinct values per process; beyond that they count as "other" (bounded cardinality)
_LABEL_RE = re.compile(r"^[a-z0-9]{1,32}$")

_lock = threading.Lock()
_seen: set[str] = set()


@functools.cache
def unknown_status_counter() -> Counter:
    """This process's counter of unknown ConfirmationStatus values, registered once."""
    from prometheus_client import Counter

    return Counter(
        UNKNOWN_STATUS,
        "Appointments whose Tebra ConfirmationStatus is not in the flow map (shown as scheduled).",
        ["status"],
    )


def status_label(raw: str) -> str:
    """The label of one unknown value: its normalised spelling when short and plain, else ``other``."""
    normalised = normalise_tebra_status(raw)
    return normalised if _LABEL_RE.match(normalised) else "other"


def note_unknown_statuses(appointments: Iterable[dict[str, Any]], *, date: str) -> int:
    """Count (and log once per value) the appointments whose status is unknown; returns how many."""
    noted = 0
    for appointment in appointments:
        raw = appointment.get("tebra_status")
        if appointment.get("status_known", True) or not raw:
            continue  # an empty status is ordinary "scheduled", not a new value
        label = status_label(str(raw))
        with _lock:
            first = label not in _seen and len(_seen) < MAX_LABELS
            if first:
                _seen.add(label)
            elif label not in _seen:
                label = "other"
        unknown_status_counter().labels(status=label).inc()
        if first:
            log.warning(
                "unknown Tebra ConfirmationStatus, shown as scheduled",
                extra={"status": label, "date": date},
            )
        noted += 1
    return noted


def reset_seen() -> None:
    """Forget which values were logged (tests)."""
    with _lock:
        _seen.clear()
