"""The API's side of the audit trail: every PHI read and every state change leaves a record.

Views are wrapped with :func:`audited` (outermost, so refused calls, 403s included, are recorded too):

    @bp.get("/appointments")
    @audited("appointments.read")
    @require_scope(READ_SCHEDULE)
    def list_appointments(): ...

A view whose change cannot be fetched again from Tebra (a status change, an accepted sync) is
``audited(action, kept=True)``: with a replica (REDIS_SENTINELS), its ``ok`` record goes in one round trip
with ``WAIT 1 <REDIS_WAIT_REPLICA_MS>``, which returns once a replica holds everything this request wrote
before it (the change, the queue entry, the record: Redis copies its writes in order). No replica in time:
a second record with outcome ``SERVICE_UNAVAILABLE`` and a 503, never a 2xx for a write a failover could
still lose (docs/reliability.md, "Acknowledged means kept").

A view that reads PHI from Redis sends its record in the same round trip as the read: it passes
:func:`record_on` to the store, which queues the record (outcome ``ok``) on the read's pipeline. Should the
answer fail after that read, the wrapper appends a second record, same request id, with the failure.

The record names the caller by ``sub`` and the roles their token carries (``role``, ``-`` for none),
the resource by the route's path parameters (dates, hpids, task ids) and its date query parameters, never
by anything from a body; a view adds ids it learns (a task id) with :func:`note`. The outcome is ``ok`` or
the envelope's error code. If the record cannot be appended (Redis down, or the audit writer so far behind
that the stream is at ``STREAM_MAXLEN``) the request fails with 503: a PHI read nobody can account for does
not happen. Each record is tagged with ``AUDIT_RECORD_KEY`` (tasks/audit.py), so the writer can tell it
from one anyone with Redis access added.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

import redis
from flask import current_app, g, request
from marshmallow import ValidationError
from redis.client import Pipeline
from ulid import ULID

from app.errors import ApiError
from app.scopes import roles_of
from app.services import services
from tasks import audit, connections, keys

log = logging.getLogger(__name__)

View = TypeVar("View", bound=Callable[..., Any])

RESOURCE_QUERY_ARGS = ("date", "start", "end")  # the only query values a record copies (dates)
MAX_RESOURCE_VALUE = 64
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id() -> str:
    """This request's id: the caller's ``X-Request-ID`` if it is a plain token, else a new ULID."""
    if "request_id" not in g:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _REQUEST_ID.fullmatch(given) else str(ULID())
    return str(g.request_id)


def note(**fields: str | int | bool) -> None:
    """Add ids the view learned (e.g. the queued task id) to this request's audit resource."""
    g.setdefault("audit_notes", {}).update(fields)


def _resource() -> dict[str, Any]:
    resource: dict[str, Any] = {
        name: str(value)[:MAX_RESOURCE_VALUE] for name, value in (request.view_args or {}).items()
    }
    for name in RESOURCE_QUERY_ARGS:
        if name in request.args:
            resource[name] = request.args[name][:MAX_RESOURCE_VALUE]
    resource.update(g.get("audit_notes", {}))
    return resource


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, ApiError):
        return exc.code
    if isinstance(exc, ValidationError):
        return "VALIDATION_ERROR"
    return "INTERNAL"


def record(action: str, exc: BaseException | None = None, *, kept: bool = False) -> None:
    """Append this request's record for ``action`` to the audit stream; ``kept``: and wait for a replica."""
    svc = services()
    wait_ms = connections.wait_replica_ms(svc.settings) if kept else 0
    if not wait_ms:
        _append(svc.redis, action, exc)
        return
    # One pipeline is one connection: WAIT counts the replicas that hold this connection's last write, and
    # the record is written after the view's own writes, so a replica holding it holds them too.
    pipe = svc.redis.pipeline(transaction=False)
    _append(pipe, action, exc)
    pipe.wait(1, wait_ms)
    if int(pipe.execute()[-1]) >= 1:
        return
    log.warning("no replica acknowledged %s within %d ms; answering 503", action, wait_ms)
    refused = ApiError(
        "SERVICE_UNAVAILABLE",
        "The change could not be confirmed on a replica; it may not have been kept. Try again shortly.",
        headers={"Retry-After": "2"},
    )
    _append(svc.redis, action, refused)
    raise refused


def record_on(pipe: Pipeline) -> None:
    """Queue this request's record (outcome ``ok``) on ``pipe``, the pipeline that reads the PHI.

    One round trip for the read and its record instead of two (a third of a read's Redis time,
    docs/benchmarks.md). The wrapper then appends nothing more unless the answer fails afterwards.
    """
    _append(pipe, g.audit_action)
    g.audit_recorded = True


def _append(client: redis.Redis | Pipeline, action: str, exc: BaseException | None = None) -> None:
    claims = g.get("claims") or {}
    settings = current_app.config["CLINIC_SETTINGS"]
    audit.append(
        client,
        record_key=settings.audit_record_key.encode(),
        sub=str(claims.get("sub", "-")),
        role=",".join(roles_of(claims)) or "-",
        action=action,
        resource={"method": request.method, **_resource()},
        outcome=_outcome(exc),
        request_id=request_id(),
        maxlen=settings.stream_maxlen,
    )


def _refuse_if_writer_behind() -> None:
    settings = current_app.config["CLINIC_SETTINGS"]
    if services().redis.xlen(keys.AUDIT) >= settings.stream_maxlen:
        raise audit.AuditBacklog("the audit writer is behind")


def audited(action: str, *, kept: bool = False) -> Callable[[View], View]:
    """Record ``action`` with its outcome each time the view is called (after it answers or fails); with
    ``kept``, a success is answered only once a replica holds it (module docstring)."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            g.audit_action = action
            if request.method not in {"GET", "HEAD"}:
                _refuse_if_writer_behind()  # a change must not happen unless its record can follow it
            try:
                result = view(*args, **kwargs)
            except Exception as exc:
                record(action, exc)
                raise
            if not g.get("audit_recorded"):  # else sent with the read (record_on)
                record(action, kept=kept)
            return result

        wrapped.audit_action = action  # type: ignore[attr-defined]
        return cast(View, wrapped)

    return decorate
