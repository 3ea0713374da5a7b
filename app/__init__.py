"""The web process: REST under /api/v1, the /ws relay, health and readiness."""

from __future__ import annotations

from flask import Flask

from app import errors, services
from config import Settings, load_settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app: settings, services, blueprints, the socket relay, error handlers."""
    settings = settings or load_settings()
    app = Flask(__name__)
    app.config.update(
        CLINIC_SETTINGS=settings,
        MAX_CONTENT_LENGTH=64 * 1024,  # every body this API takes is a few hundred bytes
        JSON_SORT_KEYS=False,
    )
    services.init_app(app, settings)
    _register_blueprints(app)
    errors.register_error_handlers(app)
    return app


def _register_blueprints(app: Flask) -> None:
    from app import health, ws
    from app.api import bp as api_bp

    app.register_blueprint(api_bp)
    app.register_blueprint(health.bp)
    ws.init_app(app)
