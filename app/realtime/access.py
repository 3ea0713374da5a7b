"""Who may open a socket and read a topic: two callables on the app, installed by app/auth.py.

``app.extensions["ws_authenticator"]`` is a ``SocketAuthenticator``: it takes the bearer token (from the
``Authorization`` header, or the first ``{"type": "auth"}`` message) or ``None`` when the client sent
neither, and returns the claims (a dict) or raises :class:`SocketAuthError`. The relay keeps the claims on
the socket.

``app.extensions["ws_topic_authorizer"]`` is a ``TopicAuthorizer``: ``(claims, topic) -> bool``, asked for
each topic of a ``subscribe`` (app/auth.py's answers from the topic table's scopes, tasks/events.py). If the
claims carry ``exp`` the socket is closed with 4401 when it passes, unless the client sent a fresh ``auth``
message.
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


def topic_authorizer(app: Flask) -> TopicAuthorizer:
    found: TopicAuthorizer = app.extensions[TOPIC_EXTENSION_KEY]
    return found


def authenticator(app: Flask) -> SocketAuthenticator:
    found: SocketAuthenticator = app.extensions[EXTENSION_KEY]
    return found
