"""How a socket authenticates: one callable on the app, replaced by the security layer.

``app.extensions["ws_authenticator"]`` is a ``SocketAuthenticator``: it takes the bearer token (from the
``Authorization`` header, or the first ``{"type": "auth"}`` message) or ``None`` when the client sent
neither, and returns the claims (a dict) or raises :class:`SocketAuthError`. The relay keeps the claims on
the socket. Until JWT verification lands, :func:`accept_any` is installed: it accepts every socket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask

EXTENSION_KEY = "ws_authenticator"

SocketAuthenticator = Callable[[str | None], dict[str, Any]]


class SocketAuthError(Exception):
    """The token is missing, invalid, expired or lacks the scope to read events."""


def accept_any(token: str | None) -> dict[str, Any]:
    """Development default: every socket is let in, with or without a token (no verification at all)."""
    return {"sub": "anonymous", "dev": True, "token_present": token is not None}


def init_app(app: Flask) -> None:
    """Install the development authenticator unless one is already set."""
    app.extensions.setdefault(EXTENSION_KEY, accept_any)


def authenticator(app: Flask) -> SocketAuthenticator:
    found: SocketAuthenticator = app.extensions[EXTENSION_KEY]
    return found
