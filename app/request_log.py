"""A request id for every request, and one access log line per request.

The id is the caller's ``X-Request-ID`` when it looks like an id, else a new one; it is answered in the same
header, set in the context variable every log line reads (tasks/logs.py) and carried into the Celery tasks
the request enqueues (tasks/correlation.py). The access line names the route template, never the path or the
query: those may hold dates of birth or names one day, the template never does.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from tasks import correlation
from tasks.logs import accept_request_id, request_id_var

HEADER = "X-Request-ID"

access_log = logging.getLogger("clinic_relay.access")


def init_app(app: Flask) -> None:
    """Register first, so the id and the clock start before any other hook can refuse the request."""
    correlation.connect()
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
    app.teardown_request(_clear)


def route_of() -> str:
    """The matched URL rule (``/api/v1/schedule/status/<date>``), or a fixed name when none matched."""
    rule = request.url_rule
    return rule.rule if rule is not None else "<unmatched>"


def elapsed_s() -> float:
    """Seconds since this request started (0 when the start hook never ran)."""
    started = g.get("request_started")
    return time.perf_counter() - started if started is not None else 0.0


def _start() -> None:
    g.request_started = time.perf_counter()
    g.request_id = accept_request_id(request.headers.get(HEADER))
    request_id_var.set(g.request_id)


def _finish(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        response.headers[HEADER] = request_id
    access_log.info(
        "request",
        extra={
            "method": request.method,
            "route": route_of(),
            "status": response.status_code,
            "ms": round(elapsed_s() * 1000, 1),
        },
    )
    return response


def _clear(_: BaseException | None = None) -> None:
    # gthread reuses threads across requests: the next request on this thread must not inherit the id.
    request_id_var.set(None)
