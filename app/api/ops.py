"""Operations: read the Tebra breaker, hold it open or clear it (docs/breaker.md).

The API never calls Tebra: it reads and writes the breaker's keys in Redis through tasks/breaker_state.py,
the same scripts the workers' guard runs. A breaker whose Redis cannot be read is reported ``unknown``
with 503, never ``closed``.
"""

from __future__ import annotations

import redis
from flask import Response, request

from app.api import bp
from app.audit import audited, note
from app.auth import OPS_BREAKER, require_scope, subject
from app.errors import ApiError, success
from app.schemas import BreakerActionSchema
from app.services import services
from tasks import breaker_state

FORCE_OPEN = "force_open"
CLEAR = "clear"


def _store() -> breaker_state.BreakerStore:
    svc = services()
    return breaker_state.BreakerStore.from_settings(svc.redis, svc.settings)


def _snapshot(store: breaker_state.BreakerStore) -> dict[str, object]:
    try:
        return store.snapshot()
    except redis.RedisError as exc:
        raise ApiError(
            "SERVICE_UNAVAILABLE",
            "The breaker's state cannot be read (Redis unavailable); Tebra calls are refused meanwhile.",
            details=breaker_state.unknown_state(exc),
            headers={"Retry-After": "5"},
        ) from None


@bp.get("/ops/breaker")
@require_scope(OPS_BREAKER)
def read_breaker() -> Response:
    """State, failures in the window, latency p95 and when it will next let a call through."""
    return success(_snapshot(_store()))


@bp.post("/ops/breaker")
@audited("ops.breaker_changed")
@require_scope(OPS_BREAKER)
def change_breaker() -> Response:
    """``{"action": "force_open"}`` holds it open until ``{"action": "clear"}``; answers the new state."""
    action = BreakerActionSchema().load(request.get_json(silent=True) or {})["action"]
    note(action=action)
    store = _store()
    by = f"api:{subject() or 'unknown'}"
    transition = store.force_open(by=by) if action == FORCE_OPEN else store.clear()
    if transition is not None:
        breaker_state.announce(services().publisher, transition, by=by)
    return success({"action": action, "changed": transition is not None, **_snapshot(store)})
