"""The /ws message protocol: what a client may send, what the server answers, the close codes.

Client → server (JSON text, one object per message):
  ``{"type": "auth", "token": "<bearer token>"}``           first message of a browser (no header)
  ``{"type": "subscribe", "topics": [...], "since": "<stream id>"}``   ``since`` optional
  ``{"type": "unsubscribe", "topics": [...]}``
  ``{"type": "ping"}``                                       an application-level keepalive
Server → client: the event envelopes themselves, and
  ``{"type": "authenticated"}``, ``{"type": "subscribed", "topics": [...]}``,
  ``{"type": "unsubscribed", "topics": [...]}`` (``topics``: every topic the socket now has, sorted),
  ``{"type": "pong"}``, ``{"type": "error", "error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tasks.events import TOPIC_FAMILIES, topic_family

MAX_TOPICS = 16  # a board shows one day: schedule + patients + ops, with room for a few days more
MAX_MESSAGE_BYTES = 4096  # the largest client message is a subscribe with MAX_TOPICS topics

# Close codes (RFC 6455 §7.4; 4000-4999 are the application's, mirroring HTTP statuses).
CLOSE_GOING_AWAY = 1001  # the server is shutting down: reconnect (to another process) with ``since``
CLOSE_TRY_AGAIN_LATER = 1013  # events are unavailable (Redis down): reconnect with backoff
CLOSE_UNAUTHORIZED = 4401  # the token was refused, or expired without a fresh ``auth`` message
CLOSE_AUTH_TIMEOUT = 4408  # no header token and no first message within the auth timeout
CLOSE_TOO_MANY = 4429  # over a connection cap (per IP, per user, or unauthenticated sockets): back off

# Error codes in ``{"type": "error", "error": {"code": ...}}`` frames; the socket stays open.
BAD_ENCODING = (
    "BAD_ENCODING"  # a binary message that is not UTF-8 (invalid UTF-8 in a text frame closes 1007)
)
BAD_JSON = "BAD_JSON"
BAD_MESSAGE = "BAD_MESSAGE"  # not an object, or a field of the wrong shape
UNKNOWN_TYPE = "UNKNOWN_TYPE"
BAD_TOPIC = "BAD_TOPIC"
TOO_MANY_TOPICS = "TOO_MANY_TOPICS"
BAD_SINCE = "BAD_SINCE"
UNAUTHORIZED = "UNAUTHORIZED"
FORBIDDEN = "FORBIDDEN"  # the token's scopes do not cover a topic (the subscribe changes nothing)
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
TOO_MANY_SOCKETS = "TOO_MANY_SOCKETS"  # sent just before a 4429 close

CLIENT_TYPES = frozenset({"auth", "subscribe", "unsubscribe", "ping"})
_TOPIC_FORMS = ", ".join(
    f"{family.name}:YYYY-MM-DD" if family.dated else family.name for family in TOPIC_FAMILIES
)

_STREAM_ID = re.compile(r"[0-9]{1,20}(-[0-9]{1,20})?")


class ProtocolError(Exception):
    """A client message the server answers with an error frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ClientMessage:
    """One parsed client message."""

    type: str
    topics: tuple[str, ...] = ()
    since: str | None = None
    token: str | None = None


def dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def error_message(code: str, message: str) -> bytes:
    return dumps({"type": "error", "error": {"code": code, "message": message}})


def is_topic(name: str) -> bool:
    """A topic of the topic table (tasks/events.py): ``schedule:YYYY-MM-DD``, ``patients:YYYY-MM-DD`` (a real
    calendar day) or ``ops``."""
    return topic_family(name) is not None


def is_stream_id(value: str) -> bool:
    """A Redis stream id, ``<ms>-<seq>`` or ``<ms>``."""
    return _STREAM_ID.fullmatch(value) is not None


def parse(raw: str | bytes) -> ClientMessage:
    """Parse and validate one client message; raise :class:`ProtocolError` with the code to answer."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(BAD_ENCODING, "Messages must be UTF-8 JSON.") from None
    try:
        body = json.loads(raw)
    except ValueError:
        raise ProtocolError(BAD_JSON, "The message is not valid JSON.") from None
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise ProtocolError(BAD_MESSAGE, 'A message is a JSON object with a string "type".')
    kind = body["type"]
    if kind not in CLIENT_TYPES:
        raise ProtocolError(UNKNOWN_TYPE, f"Unknown message type; expected one of {sorted(CLIENT_TYPES)}.")
    if kind == "auth":
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise ProtocolError(BAD_MESSAGE, '"token" must be a non-empty string.')
        return ClientMessage(kind, token=token)
    if kind in {"subscribe", "unsubscribe"}:
        return ClientMessage(kind, topics=_topics(body.get("topics")), since=_since(body.get("since"), kind))
    return ClientMessage(kind)


def _topics(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise ProtocolError(BAD_MESSAGE, '"topics" must be a non-empty list of strings.')
    if len(value) > MAX_TOPICS:
        raise ProtocolError(TOO_MANY_TOPICS, f"At most {MAX_TOPICS} topics per socket.")
    bad = [item for item in value if not is_topic(item)]
    if bad:
        raise ProtocolError(
            BAD_TOPIC,
            f"Unknown topic {bad[0][:40]!r}; topics are {_TOPIC_FORMS}.",
        )
    return tuple(dict.fromkeys(value))


def _since(value: Any, kind: str) -> str | None:
    if value is None:
        return None
    if kind != "subscribe" or not isinstance(value, str) or not is_stream_id(value):
        raise ProtocolError(BAD_SINCE, '"since" must be a stream id such as "1764000000000-0".')
    return value
