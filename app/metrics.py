"""``GET /metrics`` for Prometheus, and the API's request latency histogram.

Under gunicorn each worker process counts for itself; with ``PROMETHEUS_MULTIPROC_DIR`` set (compose and
``make run`` set it) every process writes its samples to files there and a scrape of any of them reads them
all. Stream lengths, consumer-group lag and Celery queue depths are read from Redis at scrape time with short
timeouts (tasks/metrics.py). WebSocket counts are read from this process's relay.

Protected: with ``METRICS_TOKEN`` set a scrape needs ``Authorization: Bearer <token>``; without it only
loopback clients are answered.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request

from app.errors import ApiError
from app.request_log import elapsed_s, route_of
from config import Settings
from tasks import metrics
from tasks.celery_factory import DETAILS_QUEUE, SYNC_QUEUE

bp = Blueprint("metrics", __name__)

UNTIMED_ROUTES = frozenset({"/ws"})  # a socket's request lasts as long as the socket: not a latency
# The methods HTTP defines; anything else a client makes up is counted as "other": each label value is a
# series in every process's metric files, and an unauthenticated caller must not be able to mint them.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})


def init_app(app: Flask, settings: Settings) -> None:
    """Time every request by route and status; serve /metrics."""
    app.extensions["metrics_redis"] = metrics.RedisCollector(
        data=_client_factory(settings.redis_url),
        broker=_client_factory(settings.broker_url),
        queues=(SYNC_QUEUE, DETAILS_QUEUE),
    )
    app.after_request(_observe)
    app.register_blueprint(bp)


def _client_factory(url: str) -> Any:
    client = None

    def get() -> Any:
        nonlocal client
        if client is None:
            client = metrics.scrape_client(url)
        return client

    return get


def _observe(response: Response) -> Response:
    route = route_of()
    if route not in UNTIMED_ROUTES:
        method = request.method if request.method in KNOWN_METHODS else "other"
        metrics.instruments().http_request_seconds.labels(route, method, str(response.status_code)).observe(
            elapsed_s()
        )
    return response


@bp.get("/metrics")
def scrape() -> Response:
    _authorize(current_app.config["CLINIC_SETTINGS"])
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

    metrics.instruments()  # so a process that served no request yet still lists the metric families
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    body = generate_latest(registry)
    body += generate_latest(_ScrapeTime(current_app._get_current_object()))  # type: ignore[attr-defined]
    return Response(body, content_type=CONTENT_TYPE_LATEST)


class _ScrapeTime:
    """The collectors read at scrape time: Redis (streams, queues) and this process's relay."""

    def __init__(self, app: Flask) -> None:
        self._app = app

    def collect(self) -> Iterator[Any]:
        yield from self._app.extensions["metrics_redis"].collect()
        yield from _relay_metrics(self._app)


def _relay_metrics(app: Flask) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    relay = app.extensions.get("ws_relay")
    if relay is None:
        return
    yield GaugeMetricFamily(
        metrics.WEBSOCKET_CONNECTIONS,
        "Open WebSocket connections in this API process.",
        value=relay.socket_count,
    )
    yield CounterMetricFamily(
        metrics.WEBSOCKET_DROPPED.removesuffix("_total"),
        "Slow WebSocket connections dropped by this API process's relay.",
        value=relay.dropped,
    )


def _authorize(settings: Settings) -> None:
    if settings.metrics_token:
        header = request.headers.get("Authorization", "")
        supplied = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        if not hmac.compare_digest(supplied.encode(), settings.metrics_token.encode()):
            raise ApiError("UNAUTHORIZED", "A metrics token is required.")
        return
    if not _is_loopback(request.remote_addr):
        raise ApiError("FORBIDDEN", "Metrics are served to loopback clients only (or set METRICS_TOKEN).")


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
