"""The event contract: one envelope in the stream, on pub/sub and on the socket.

``{"id": "<stream id>", "type": "schedule_synced", "ts": "<ISO-8601 UTC>", "data": {...}}``

An event is appended to the capped ``agent_updates`` stream and published on the ``events`` channel in one
Lua script: one round trip, and the channel carries each entry in stream order with its id, so a socket that
reconnects with ``since`` can replay from the stream without a gap or a duplicate. The envelope is built once
here, as the exact text every socket will receive (the relay sends these bytes as they are).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import redis
from redis.client import Pipeline

from tasks import keys

SCHEDULE_SYNC_STARTED = "schedule_sync_started"
SCHEDULE_SYNCED = "schedule_synced"
SCHEDULE_SYNC_DEFERRED = "schedule_sync_deferred"
SCHEDULE_SYNC_FAILED = "schedule_sync_failed"
PATIENT_STATUS_CHANGED = "patient_status_changed"
PATIENT_DETAILS_UPDATED = "patient_details_updated"
PATIENT_REMOVED = "patient_removed"
PATIENT_CONFLICT = "patient_conflict"
BREAKER_STATE_CHANGED = "breaker_state_changed"
TEBRA_CREDENTIALS_REFUSED = "tebra_credentials_refused"
SCHEDULE_SUSPECT_EMPTY = "schedule_suspect_empty"

EVENT_TYPES = frozenset(
    {
        SCHEDULE_SYNC_STARTED,
        SCHEDULE_SYNCED,
        SCHEDULE_SYNC_DEFERRED,
        SCHEDULE_SYNC_FAILED,
        PATIENT_STATUS_CHANGED,
        PATIENT_DETAILS_UPDATED,
        PATIENT_REMOVED,
        PATIENT_CONFLICT,
        BREAKER_STATE_CHANGED,
        TEBRA_CREDENTIALS_REFUSED,
        SCHEDULE_SUSPECT_EMPTY,
    }
)

# The same append-and-publish as a Lua function, for scripts that decide and announce in one step (a
# patient leaving the board, tasks/sync/reconcile.py): the envelope is the one EventPublisher sends.
PUBLISH_LUA_FUNCTION = """
local function publish_event(stream, maxlen, sender, channel, event_type, ts, payload)
  local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'sender', sender, 'action', event_type,
                        'ts', ts, 'payload', payload)
  redis.call('PUBLISH', channel, '{"id":"' .. id .. '","type":"' .. event_type .. '","ts":"' .. ts ..
             '","data":' .. payload .. '}')
  return id
end
"""

# KEYS[1] stream; ARGV: maxlen, sender, type, ts, payload JSON, envelope tail, channel.
_PUBLISH_LUA = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                      'sender', ARGV[2], 'action', ARGV[3], 'ts', ARGV[4], 'payload', ARGV[5])
redis.call('PUBLISH', ARGV[7], '{"id":"' .. id .. '",' .. ARGV[6])
return id
"""


def utc_now_iso() -> str:
    """Now, as ISO-8601 UTC with milliseconds (the envelope's ``ts``)."""
    return iso_utc(datetime.now(UTC))


def iso_utc(moment: datetime) -> str:
    """An aware instant in the same form as :func:`utc_now_iso` (such strings order as the instants do)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_instant(value: Any) -> datetime | None:
    """An ISO-8601 time as an aware instant (``Z`` or an offset; a naive one is taken as UTC); None when empty
    or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def dumps(value: Any) -> str:
    """An event payload's one JSON spelling (sorted keys, no spaces)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class TopicFamily:
    """One family of socket topics: its name, the pattern of its topic names, the token scope that reads it
    and the event types it carries. A dated family's topics are ``{name}:{YYYY-MM-DD}`` (``data.date``)."""

    name: str
    pattern: re.Pattern[str]
    scope: str
    events: frozenset[str]

    @property
    def dated(self) -> bool:
        return self.pattern.groups > 0

    def topic(self, data: dict[str, Any]) -> str:
        """The topic of an event of this family carrying ``data``."""
        return f"{self.name}:{data.get('date', '')}" if self.dated else self.name

    def holds(self, topic: str) -> bool:
        """Whether ``topic`` is one of this family's (a dated one names a real calendar day)."""
        match = self.pattern.fullmatch(topic)
        if match is None:
            return False
        if not self.dated:
            return True
        try:
            date.fromisoformat(match.group(1))
        except ValueError:
            return False
        return True


# The topic table: every event type belongs to exactly one family (a test holds it to EVENT_TYPES); the socket
# protocol (app/realtime/protocol.py) accepts these names only, and app/auth.py asks a token for ``scope``.
# Scopes are spelled as the API's tokens carry them (app/auth.py ALL_SCOPES; a test holds the two in step).
_DAY = r":([0-9]{4}-[0-9]{2}-[0-9]{2})"  # ASCII digits only
TOPIC_FAMILIES = (
    TopicFamily(
        "schedule",
        re.compile("schedule" + _DAY),
        "read:schedule",
        frozenset(
            {
                SCHEDULE_SYNC_STARTED,
                SCHEDULE_SYNCED,
                SCHEDULE_SYNC_DEFERRED,
                SCHEDULE_SYNC_FAILED,
                SCHEDULE_SUSPECT_EMPTY,
            }
        ),
    ),
    TopicFamily(
        "patients",
        re.compile("patients" + _DAY),
        "read:schedule",
        frozenset({PATIENT_STATUS_CHANGED, PATIENT_DETAILS_UPDATED, PATIENT_REMOVED, PATIENT_CONFLICT}),
    ),
    TopicFamily(
        "ops", re.compile("ops"), "ops:breaker", frozenset({BREAKER_STATE_CHANGED, TEBRA_CREDENTIALS_REFUSED})
    ),
)
_FAMILY_OF_EVENT = {event_type: family for family in TOPIC_FAMILIES for event_type in family.events}
_SCHEDULE = TOPIC_FAMILIES[0]


def topic_of(event_type: str, data: dict[str, Any]) -> str:
    """The socket topic an event belongs to: it follows from its type and ``data.date``."""
    # A type outside the table (an entry nobody here wrote) goes where a schedule event would.
    return _FAMILY_OF_EVENT.get(event_type, _SCHEDULE).topic(data)


def topic_family(topic: str) -> TopicFamily | None:
    """The family ``topic`` belongs to, or None when it is no topic at all."""
    return next((family for family in TOPIC_FAMILIES if family.holds(topic)), None)


def envelope_tail(event_type: str, ts: str, payload: str) -> str:
    """The envelope's text after its id (the publish script puts ``{"id":"<id>",`` in front of it once XADD
    has named the id)."""
    return f'"type":{json.dumps(event_type)},"ts":"{ts}","data":{payload}}}'


def envelope_text(stream_id: str, event_type: str, ts: str, payload: str) -> bytes:
    """The envelope's wire form: the exact UTF-8 text the channel carries and every socket receives."""
    return ('{"id":"' + stream_id + '",' + envelope_tail(event_type, ts, payload)).encode()


def entry_text(stream_id: str | bytes, fields: Mapping[Any, str | bytes]) -> bytes:
    """The wire form of one ``agent_updates`` entry (a replay sends what the live channel sent)."""
    got = {_text(name): _text(value) for name, value in fields.items()}
    return envelope_text(
        _text(stream_id), got.get("action", ""), got.get("ts", ""), got.get("payload") or "{}"
    )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class EventPublisher:
    """Appends events to ``agent_updates`` and publishes them on ``events``, one round trip each."""

    def __init__(self, client: redis.Redis, *, sender: str, maxlen: int) -> None:
        self._client = client
        self._sender = sender
        self._maxlen = maxlen
        self._channel = keys.events_channel(client)
        self._script = client.register_script(_PUBLISH_LUA)

    def publish(self, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
        """Append and publish one event; returns the envelope as sent (with its stream id)."""
        ts, args = self._args(event_type, data)
        stream_id = self._script(keys=[keys.AGENT_UPDATES], args=args)
        return {"id": stream_id, "type": event_type, "ts": ts, "data": data}

    def publish_on(self, pipe: Pipeline, event_type: str, data: dict[str, Any]) -> None:
        """Queue the same append-and-publish on ``pipe`` (several events in one round trip)."""
        self._script(keys=[keys.AGENT_UPDATES], args=self._args(event_type, data)[1], client=pipe)

    def _args(self, event_type: str, data: dict[str, Any]) -> tuple[str, list[Any]]:
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}")
        ts = utc_now_iso()
        payload = dumps(data)
        tail = envelope_tail(event_type, ts, payload)
        return ts, [self._maxlen, self._sender, event_type, ts, payload, tail, self._channel]


def envelope_from_entry(stream_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """The envelope of one ``agent_updates`` entry, parsed (what a socket would receive, as a dict)."""
    envelope: dict[str, Any] = json.loads(entry_text(stream_id, fields))
    return envelope


def read_since(client: redis.Redis, since: str, *, count: int = 1000) -> list[dict[str, Any]]:
    """Envelopes appended after stream id ``since`` (exclusive), oldest first, at most ``count``."""
    entries = client.xrange(keys.AGENT_UPDATES, min=f"({since}", max="+", count=count)
    return [envelope_from_entry(entry_id, fields) for entry_id, fields in entries]


StreamKey = tuple[int, int]  # a stream id as numbers: (ms, seq)


def stream_id_key(stream_id: str) -> StreamKey:
    """Sort key of a stream id ``ms-seq`` (ids compare as numbers, not as text)."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)
