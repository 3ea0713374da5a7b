"""One change of the breaker's state and its announcement: a log line and ``breaker_state_changed``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

from tasks import events

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transition:
    """One change of state, seen by exactly the caller whose script made it."""

    before: str
    after: str
    reason: str

    @classmethod
    def parse(cls, text: str, reason: str) -> Transition | None:
        """A script's ``before>after`` reply, or None for the empty reply (nothing changed)."""
        if not text:
            return None
        before, _, after = text.partition(">")
        return cls(before, after, reason)


def transition_event(
    transition: Transition, *, by: str, detail: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``breaker_state_changed`` payload (topic ``ops``): no PHI, only states, reasons and counts."""
    return {
        "breaker": "tebra",
        "from": transition.before,
        "to": transition.after,
        "reason": transition.reason or None,
        "by": by,
        "at": events.utc_now_iso(),
        **(detail or {}),
    }


def announce(
    publisher: events.EventPublisher,
    transition: Transition,
    *,
    by: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Log and publish one transition; called only by the caller whose script made it (so: once)."""
    data = transition_event(transition, by=by, detail=detail)
    log.warning(
        "tebra breaker %s -> %s (%s)",
        transition.before,
        transition.after,
        transition.reason or "-",
        extra={"breaker_from": transition.before, "breaker_to": transition.after, "by": by},
    )
    try:
        publisher.publish(events.BREAKER_STATE_CHANGED, data)
    except redis.RedisError as exc:  # the transition itself is stored; only its announcement is lost
        log.error("breaker_state_changed not published: %s", type(exc).__name__)
