"""How a socket authenticates: one callable on the app, replaced by the security layer.

``app.extensions["ws_authenticator"]`` is a ``SocketAuthenticator``: it takes the bearer token (from the
``Authorization`` header, or the first ``{"type": "auth"}`` message) or ``None`` when the client sent
neither, and returns the claims (a dict) or raises :class:`SocketAuthError`. The relay keeps the claims on
the socket. Until JWT verification lands, :func:`accept_any` is installed: it accepts every socket.

``app.extensions["ws_topic_authorizer"]`` (optional) is a ``TopicAuthorizer``: ``(claims, topic) -> bool``,
asked for each topic of a ``subscribe``; without one every topic is allowed. If the claims carry ``exp``
the socket is closed with 4401 when it passes, unless the client sent a fresh ``auth`` message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask

EXTENSION_KEY = "ws_authenticator"
TOPIC_EXTENSION_KEY = "ws_topic_authorizer"

SocketAuthenticator = Callable[[str | None], dict[str, Any]]
TopicAuthorizer = Callable[[dict[str, Any], str], bool]


class SocketAuthError(Exception):
    """The token is missing, invalid, expired or lacks the scope to read events."""


def accept_any(token: str | None) -> dict[str, Any]:
    """Development default: every socket is let in, with or without a token (no verification at all)."""
    return {"sub": "anonymous", "dev": True, "token_present": token is not None}


def init_app(app: Flask) -> None:
    """Install the development authenticator unless one is already set."""
    app.extensions.setdefault(EXTENSION_KEY, accept_any)


def allow_every_topic(claims: dict[str, Any], topic: str) -> bool:
    """Default topic policy: any authenticated socket may receive any topic."""
    return True


def topic_authorizer(app: Flask) -> TopicAuthorizer:
    found: TopicAuthorizer = app.extensions.get(TOPIC_EXTENSION_KEY, allow_every_topic)
    return found


def authenticator(app: Flask) -> SocketAuthenticator:
    found: SocketAuthenticator = app.extensions[EXTENSION_KEY]
    return found
