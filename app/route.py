"""A route under /api/v1 declares itself once: method and path, scope, audit action, rate cost, schemas.

    @route(
        bp, "POST", "/schedule/sync",
        summary="Queue a sync of one clinic day",
        scope=SYNC_SCHEDULE, audit="schedule.sync_requested", kept=True, cost=SYNC_COST,
        query=SyncRequestSchema, answer=Answer(SyncAcceptedSchema, status=202),
    )
    def request_sync() -> Response: ...

:func:`route` applies the declaration and keeps it on the view (``view.declaration``):

- the view is wrapped with its audit record (app/audit.py ``audited``, outermost, so refusals are recorded
  too) around its scope check (app/auth.py ``require_scope``), and registered on the blueprint;
- the rate limiter charges the declared cost (app/ratelimit.py ``cost_of`` reads it from the view);
- the OpenAPI document is generated from every declaration and its marshmallow schemas (app/openapi.py).

The view loads its input with the declared schemas (:func:`load_path`, :func:`load_query`, :func:`load_body`),
in the order it wants a refusal reported; it names no schema itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Blueprint, current_app, request
from marshmallow import Schema, fields

from app.audit import audited
from app.auth import require_scope
from app.schemas import instance_of
from app.services import services

View = TypeVar("View", bound=Callable[..., Any])

# Error statuses every declared route can answer, whatever it does: a bad parameter, no token, a token
# without the scope, the rate limit, Redis or the audit trail away.
EVERY_ROUTE_ERRORS = (400, 401, 403, 429, 503)


@dataclass(frozen=True)
class Answer:
    """The success answer: ``data`` as ``schema`` (a list of them with ``many``; any JSON object when None),
    with ``extra`` top-level fields beside it. ``envelope=False``: the body is ``schema`` itself."""

    schema: type[Schema] | None = None
    status: int = 200
    many: bool = False
    description: str = "ok"
    extra: Mapping[str, fields.Field] = field(default_factory=dict)
    envelope: bool = True


@dataclass(frozen=True)
class Declaration:
    """Everything the API knows about one route (see the module docstring)."""

    method: str
    rule: str  # the path under the blueprint's prefix, Flask's syntax (``/tasks/<task_id>``)
    summary: str
    scope: str
    cost: int
    answer: Answer
    audit: str | None = None
    kept: bool = False  # a success answers only once a replica holds it (app/audit.py)
    path: type[Schema] | None = None  # path parameters
    query: type[Schema] | None = None  # query parameters (unknown ones are refused)
    headers: type[Schema] | None = None  # request headers the view reads
    body: type[Schema] | None = None  # the JSON body
    errors: tuple[int, ...] = ()  # statuses it may answer beyond EVERY_ROUTE_ERRORS

    @property
    def statuses(self) -> tuple[int, ...]:
        """Every error status the route may answer, sorted."""
        return tuple(sorted({*EVERY_ROUTE_ERRORS, *self.errors}))


def route(bp: Blueprint, method: str, rule: str, **options: Any) -> Callable[[View], View]:
    """Declare a route (see the module docstring) and register it on ``bp``; ``options`` are the fields of
    :class:`Declaration` after ``method`` and ``rule`` (a misspelt one fails at import)."""
    declared = Declaration(method=method.upper(), rule=rule, **options)

    def register(view: View) -> View:
        guarded = require_scope(declared.scope)(view)
        if declared.audit is not None:
            guarded = audited(declared.audit, kept=declared.kept)(guarded)
        guarded.declaration = declared  # type: ignore[attr-defined]
        bp.add_url_rule(rule, view_func=guarded, methods=[declared.method])
        return guarded

    return register


def declaration_of(view: Callable[..., Any] | None) -> Declaration | None:
    """The declaration a registered view carries, or None (a route declared some other way, or none)."""
    found = getattr(view, "declaration", None)
    return found if isinstance(found, Declaration) else None


def declared() -> Declaration:
    """The declaration of the route serving this request."""
    found = declaration_of(current_app.view_functions.get(request.endpoint or ""))
    if found is None:
        raise LookupError(f"{request.endpoint} is not a declared route")
    return found


def load_path(**values: str) -> dict[str, Any]:
    """This request's path parameters, loaded with the declared ``path`` schema."""
    return _load(declared().path, values)


def load_query() -> dict[str, Any]:
    """This request's query, loaded with the declared ``query`` schema (unknown parameters are refused)."""
    return _load(declared().query, request.args)


def load_body(body: Any) -> dict[str, Any]:
    """``body`` (the JSON the view read), loaded with the declared ``body`` schema."""
    return _load(declared().body, body)


def _load(schema: type[Schema] | None, data: Any) -> dict[str, Any]:
    if schema is None:
        raise LookupError(f"{request.endpoint} declares no schema for this input")
    svc = services()
    loaded: dict[str, Any] = instance_of(schema, svc.clinic_tz, svc.settings.max_range_days).load(data)
    return loaded
