"""The web process: REST under /api/v1, the /ws relay, health and readiness."""

from __future__ import annotations

from flask import Flask, request

from app import auth, board, errors, headers, metrics, ratelimit, request_log, services, trusted_hosts
from app.errors import ApiError
from app.json_provider import OrjsonProvider
from config import Settings, load_settings
from tasks.logs import configure_logging


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app: settings, services, blueprints, the socket relay, error handlers."""
    settings = settings or load_settings()
    configure_logging(settings, "api")  # JSON lines with request and task ids (tasks/logs.py)
    app = Flask(__name__)
    app.json = OrjsonProvider(app)  # every answer is JSON; orjson encodes a day's rows several times faster
    app.config.update(
        CLINIC_SETTINGS=settings,
        MAX_CONTENT_LENGTH=64 * 1024,  # every body this API takes is a few hundred bytes
    )
    services.init_app(app, settings)
    request_log.init_app(app)  # X-Request-ID in, out and into tasks; one access line per request
    metrics.init_app(app, settings)  # GET /metrics; request latency by route and status
    trusted_hosts.init_app(app, settings)  # 400 for a Host not in TRUSTED_HOSTS (DNS rebinding), first of all
    app.before_request(_refuse_oversized_bodies)
    ratelimit.init_app(app)  # charges every /api request, bad tokens included, before anything else runs
    auth.init_app(app, settings)  # /api needs a valid bearer token; the /ws hook; the dev JWKS in dev mode
    headers.init_app(app, settings)  # security headers, no-store on /api, the CORS allow-list
    _register_blueprints(app)
    board.init_app(app, settings)  # GET /: the live board page; /dev/token only in dev signing mode
    errors.register_error_handlers(app)
    return app


def _register_blueprints(app: Flask) -> None:
    from app import health, openapi
    from app.api import bp as api_bp
    from app.realtime import endpoint as realtime

    app.register_blueprint(api_bp)
    app.register_blueprint(openapi.bp)  # GET /api/v1/openapi.json
    app.register_blueprint(health.bp)
    realtime.init_app(app)  # /ws: the socket endpoint and its relay


def _refuse_oversized_bodies() -> None:
    # Flask enforces MAX_CONTENT_LENGTH only when a view reads the body; refuse before any view runs.
    limit = request.max_content_length
    if limit is not None and (request.content_length or 0) > limit:
        raise ApiError("PAYLOAD_TOO_LARGE", f"Request bodies are limited to {limit} bytes.")
