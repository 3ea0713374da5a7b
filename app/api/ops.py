"""Operations: read the Tebra breaker, hold it open or clear it (docs/breaker.md); read the Tebra account's
state (the credentials latch, the live throttles, the last check) and resume after refused credentials
(docs/tebra.md).

The API never calls Tebra: it reads and writes the breaker's keys in Redis through tasks/breaker/store.py,
the same scripts the workers' guard runs. A breaker whose Redis cannot be read is reported ``unknown``
with 503, never ``closed``.
"""

from __future__ import annotations

from typing import Any

import redis
from flask import Response, request

from app.api import bp
from app.audit import audited, note
from app.auth import require_scope, subject
from app.errors import ApiError, success
from app.schemas import BreakerActionSchema, TebraActionSchema
from app.scopes import OPS_BREAKER
from app.services import services
from tasks import credentials_latch, events, keys, tebra_check
from tasks.breaker.store import BreakerStore, unknown_state
from tasks.breaker.transition import announce
from tasks.celery_factory import SYNC_QUEUE
from tasks.tebra_check import CHECK_TASK

FORCE_OPEN = "force_open"
CLEAR = "clear"


def _store() -> BreakerStore:
    svc = services()
    return BreakerStore.from_settings(svc.redis, svc.settings)


def _snapshot(store: BreakerStore) -> dict[str, object]:
    try:
        return store.snapshot()
    except redis.RedisError as exc:
        raise ApiError(
            "SERVICE_UNAVAILABLE",
            "The breaker's state cannot be read (Redis unavailable); Tebra calls are refused meanwhile.",
            details=unknown_state(exc),
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
        announce(services().publisher, transition, by=by)
    return success({"action": action, "changed": transition is not None, **_snapshot(store)})


RESUME = "resume"
CHECK = "check"


def _tebra_state(client: redis.Redis) -> dict[str, Any]:
    """The latch, the live throttles (GetThrottles, ms per operation) and the last check's report."""
    try:
        latch = credentials_latch.read(client)
        throttles = client.hgetall(keys.throttle_intervals())
        last_check = tebra_check.last_report(client)
    except redis.RedisError as exc:
        raise ApiError(
            "SERVICE_UNAVAILABLE",
            "The Tebra account's state cannot be read (Redis unavailable).",
            details={"error": type(exc).__name__},
            headers={"Retry-After": "5"},
        ) from None
    return {
        "credentials": latch.as_dict(),
        "throttles": {str(name): int(float(value)) for name, value in throttles.items()},
        "last_check": last_check,
    }


@bp.get("/ops/tebra")
@require_scope(OPS_BREAKER)
def read_tebra() -> Response:
    """Whether Tebra refused our credentials (the latch), the account's live throttles, the last check."""
    return success(_tebra_state(services().redis))


@bp.post("/ops/tebra")
@audited("ops.tebra_changed")
@require_scope(OPS_BREAKER)
def change_tebra() -> Response:
    """``{"action": "resume"}``: the operator fixed the credentials; workers read them again and call Tebra.
    ``{"action": "check"}``: run the Tebra check (``make check-tebra``) on a worker; its report shows here."""
    action = TebraActionSchema().load(request.get_json(silent=True) or {})["action"]
    note(action=action)
    svc = services()
    answer: dict[str, Any] = {"action": action}
    if action == RESUME:
        by = f"api:{subject() or 'unknown'}"
        was, generation = credentials_latch.resume(svc.redis, resumed_at=events.utc_now_iso(), by=by)
        answer.update(changed=was, generation=generation)
    else:
        answer["task_id"] = _queue_check()
    return success({**answer, **_tebra_state(svc.redis)})


def _queue_check() -> str:
    """Send the check to a worker (the API never calls Tebra); answers the task id."""
    sent = services().celery.send_task(CHECK_TASK, queue=SYNC_QUEUE, ignore_result=True)
    return str(sent.id)
