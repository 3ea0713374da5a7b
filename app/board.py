"""The live board page at ``/``: the project's own client of the REST API and /ws (docs/board.md).

Static files only (app/static/: HTML, CSS, plain JavaScript) under a strict Content-Security-Policy: no
inline script or style anywhere. ``/board/config`` gives the page what it cannot know by itself (the clinic's
time zone and today there, the flow table). ``/dev/token`` hands the page a development bearer token, and
exists only with ``APP_ENV=development`` and ``AUTH_MODE=dev`` (which binds loopback only): the same token
``make token`` prints, so the page works without a human in development, and the route is simply absent
everywhere else, tests and production included.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

from flask import Blueprint, Flask, Response, current_app, jsonify, request, send_from_directory
from joserfc.jwk import RSAKey

from app import devkey
from app.auth import ALL_SCOPES
from config import Settings
from tasks import flow

STATIC_DIR = Path(__file__).parent / "static"
_PLAIN_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:\d{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:\d{1,5})?")
DEV_TOKEN_TTL_S = 3600  # the page fetches a new one when the API answers 401 or the socket closes 4401

bp = Blueprint("board", __name__, static_folder=STATIC_DIR, static_url_path="/board/static")


def _page_policy(host: str) -> str:
    """The page's CSP: its own scripts, styles and API only; the socket on the same host."""
    # 'self' covers ws: to the same host in current browsers; the explicit sources are for older ones. The
    # Host header is the client's: only a plain host[:port] goes into the header.
    sockets = f" ws://{host} wss://{host}" if _PLAIN_HOST.fullmatch(host) else ""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src 'self'{sockets}; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


@bp.get("/")
def page() -> Response:
    response = send_from_directory(STATIC_DIR, "board.html", max_age=0)
    response.headers["Content-Security-Policy"] = _page_policy(request.host)
    response.headers["Cache-Control"] = "no-store"
    return response


def _settings() -> Settings:
    found: Settings = current_app.config["CLINIC_SETTINGS"]
    return found


@bp.get("/board/config")
def config() -> Response:
    """The clinic's time zone and today there, the flow table, and whether a dev token is on offer."""
    settings = _settings()
    tz = ZoneInfo(settings.clinic_tz)
    body = {
        "clinic_tz": settings.clinic_tz,
        "today": datetime.now(tz).date().isoformat(),
        "states": list(flow.STATES),
        "next": {state: flow.allowed_next(state) for state in flow.STATES},
        "dev_token": dev_token_enabled(settings),
    }
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


def dev_token_enabled(settings: Settings) -> bool:
    """The page may be handed a token: development signing mode in development, nowhere else."""
    return settings.auth_mode == "dev" and settings.app_env == "development"


class _DevSigner:
    """Signs development tokens with the key the API trusts in dev mode (loaded on first use)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def key(self) -> RSAKey:
        return devkey.load_or_create(self.settings.dev_key_path)

    def token(self) -> str:
        # Imported here: app.devtoken is also `python -m app.devtoken` (make token), which must not find
        # itself already imported by the package.
        from app import devtoken

        return devtoken.mint(
            self.key, audience=self.settings.auth0_audience, scopes=ALL_SCOPES, ttl_s=DEV_TOKEN_TTL_S
        )


def init_app(app: Flask, settings: Settings) -> None:
    """Register the page; add ``/dev/token`` only in development signing mode in development."""
    app.register_blueprint(bp)
    if not dev_token_enabled(settings):
        return
    signer = _DevSigner(settings)

    def dev_token() -> Response:
        response = jsonify({"token": signer.token(), "expires_in": DEV_TOKEN_TTL_S, "token_type": "Bearer"})
        response.headers["Cache-Control"] = "no-store"
        return response

    app.add_url_rule("/dev/token", "dev_token", dev_token, methods=["GET"])
