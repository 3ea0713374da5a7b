"""Which Host and Origin headers the API answers: ``TRUSTED_HOSTS`` and ``ALLOWED_ORIGINS``.

DNS rebinding: a page on ``evil.example`` re-points its name at 127.0.0.1 and its scripts then read the
loopback API as their own origin (``/dev/token`` in development, anything else a token reaches). The
browser still sends ``Host: evil.example``, so every request whose Host is not trusted is refused (400
``VALIDATION_ERROR``) before anything else runs. Trusted: the names in ``TRUSTED_HOSTS`` (``.example.org``
covers its subdomains) and, always, the loopback names (``localhost``, ``127.0.0.1``, ``::1``), which no
rebinding can produce and which health checks and local scrapes use.

Cross-site WebSocket hijacking: a browser sends ``Origin`` with every WebSocket handshake. ``/ws`` refuses
(HTTP 403) an Origin that is neither the API's own (same scheme-less host and port as the trusted Host) nor
listed in ``ALLOWED_ORIGINS``; in development and tests any loopback origin is allowed too (a front-end dev
server on another port). Clients that are not browsers send no Origin and are let through: they hold a token.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import Flask, request

from app.errors import ApiError
from config import Settings
from config.parsing import LOOPBACK_NAMES, is_loopback

ALWAYS_TRUSTED = (*LOOPBACK_NAMES, "127.0.0.1", "::1")
_HOST = re.compile(r"(?P<name>[a-z0-9.-]{1,253}|\[[0-9a-f:.]{2,45}\])(?::(?P<port>[0-9]{1,5}))?")


def split_host(header: str) -> tuple[str, str] | None:
    """``(name, port)`` of a Host header (name lower-cased, IPv6 without brackets); None when malformed."""
    match = _HOST.fullmatch(header.strip().lower())
    if match is None:
        return None
    return match.group("name").strip("[]"), match.group("port") or ""


def trusted_names(settings: Settings) -> tuple[str, ...]:
    """TRUSTED_HOSTS as lower-case names (a leading dot: the domain and its subdomains), loopback added."""
    listed = (item.strip().lower().strip("[]") for item in settings.trusted_hosts.split(","))
    return (*ALWAYS_TRUSTED, *(item for item in listed if item))


def host_is_trusted(header: str, names: tuple[str, ...]) -> bool:
    parts = split_host(header)
    if parts is None:
        return False
    name = parts[0]
    return any(
        name == item or (item.startswith(".") and (name.endswith(item) or name == item[1:])) for item in names
    )


def allowed_origins(settings: Settings) -> frozenset[str]:
    """ALLOWED_ORIGINS as exact origins (scheme://host[:port], lower-case, no trailing slash)."""
    return frozenset(
        item.strip().rstrip("/").lower() for item in settings.allowed_origins.split(",") if item.strip()
    )


def origin_is_allowed(origin: str, host_header: str, allowed: frozenset[str], *, loopback_ok: bool) -> bool:
    """Whether a browser page from ``origin`` may open a socket to the API reached as ``host_header``."""
    normalized = origin.strip().rstrip("/").lower()
    if normalized in allowed:
        return True
    parts = urlsplit(normalized)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        return False  # "null" (a sandboxed frame, a file) and anything else that is not a web origin
    if parts.netloc == host_header.strip().lower():
        return True  # the API's own page (the board)
    return loopback_ok and is_loopback(parts.hostname or "")


def init_app(app: Flask, settings: Settings) -> None:
    """Refuse requests to an untrusted Host; keep the Origin policy for the /ws handshake."""
    names = trusted_names(settings)

    def refuse_untrusted_host() -> None:
        if not host_is_trusted(request.headers.get("Host", ""), names):
            raise ApiError("VALIDATION_ERROR", "The Host header names a host that is not served here.")

    app.before_request(refuse_untrusted_host)
    app.extensions["allowed_origins"] = allowed_origins(settings)


def check_socket_origin(app: Flask, settings: Settings) -> None:
    """ApiError (403) when a browser opens /ws from an origin that is not allowed."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    allowed: frozenset[str] = app.extensions["allowed_origins"]
    loopback_ok = settings.app_env in {"development", "test"}
    if not origin_is_allowed(origin, request.headers.get("Host", ""), allowed, loopback_ok=loopback_ok):
        raise ApiError("FORBIDDEN", "WebSocket connections from this origin are not allowed.")
