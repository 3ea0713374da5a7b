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
from app.audit import note
from app.auth import subject
from app.errors import ApiError, success
from app.ratelimit import READ_COST, WRITE_COST
from app.route import Answer, load_body, route
from app.schemas import BreakerActionSchema, TebraActionSchema
from app.scopes import OPS_BREAKER
from app.services import services
from tasks import credentials_latch, events, keys, tebra_check
from tasks.breaker.store import BreakerStore, unknown_state
from tasks.breaker.transition import announce

FORCE_OPEN = "force_open"


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


@route(
    bp,
    "GET",
    "/ops/breaker",
    summary="The Tebra breaker's state",
    scope=OPS_BREAKER,
    cost=READ_COST,
    answer=Answer(description="breaker"),
)
def read_breaker() -> Response:
    """State, failures in the window, latency p95 and when it will next let a call through."""
    return success(_snapshot(_store()))


@route(
    bp,
    "POST",
    "/ops/breaker",
    summary="Hold the Tebra breaker open until cleared, or clear it",
    scope=OPS_BREAKER,
    audit="ops.breaker_changed",
    cost=WRITE_COST,
    body=BreakerActionSchema,
    answer=Answer(description="the new state"),
    errors=(413,),
)
def change_breaker() -> Response:
    """``{"action": "force_open"}`` holds it open until ``{"action": "clear"}``; answers the new state."""
    action = load_body(request.get_json(silent=True) or {})["action"]
    note(action=action)
    store = _store()
    by = f"api:{subject() or 'unknown'}"
    transition = store.force_open(by=by) if action == FORCE_OPEN else store.clear()
    if transition is not None:
        announce(services().publisher, transition, by=by)
    return success({"action": action, "changed": transition is not None, **_snapshot(store)})


RESUME = "resume"


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


@route(
    bp,
    "GET",
    "/ops/tebra",
    summary="The Tebra account: the credentials latch, the live throttles, the last check",
    scope=OPS_BREAKER,
    cost=READ_COST,
    answer=Answer(description="the account's state"),
)
def read_tebra() -> Response:
    """Whether Tebra refused our credentials (the latch), the account's live throttles, the last check."""
    return success(_tebra_state(services().redis))


@route(
    bp,
    "POST",
    "/ops/tebra",
    summary="Resume Tebra calls after fixing refused credentials, or run the Tebra check on a worker",
    scope=OPS_BREAKER,
    audit="ops.tebra_changed",
    cost=WRITE_COST,
    body=TebraActionSchema,
    answer=Answer(description="the new state"),
    errors=(413,),
)
def change_tebra() -> Response:
    """``{"action": "resume"}``: the operator fixed the credentials; workers read them again and call Tebra.
    ``{"action": "check"}``: run the Tebra check (``make check-tebra``) on a worker; its report shows here."""
    action = load_body(request.get_json(silent=True) or {})["action"]
    note(action=action)
    svc = services()
    answer: dict[str, Any] = {"action": action}
    if action == RESUME:
        by = f"api:{subject() or 'unknown'}"
        was, generation = credentials_latch.resume(svc.redis, resumed_at=events.utc_now_iso(), by=by)
        answer.update(changed=was, generation=generation)
    else:
        answer["task_id"] = tebra_check.request_check(svc.celery)  # on a worker: the API never calls Tebra
    return success({**answer, **_tebra_state(svc.redis)})
