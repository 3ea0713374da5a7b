"""The event contract: one envelope in the stream, on pub/sub and on the socket.

``{"id": "<stream id>", "type": "schedule_synced", "ts": "<ISO-8601 UTC>", "data": {...}}``

An event is appended to the capped ``agent_updates`` stream and published on the ``events`` channel in one
Lua script: one round trip, and the channel carries each entry in stream order with its id, so a socket that
reconnects with ``since`` can replay from the stream without a gap or a duplicate. The envelope is built once
here, as the exact text every socket will receive (the relay sends these bytes as they are).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
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


def topic_of(event_type: str, data: dict[str, Any]) -> str:
    """The socket topic an event belongs to: it follows from its type and ``data.date``."""
    if event_type in (BREAKER_STATE_CHANGED, TEBRA_CREDENTIALS_REFUSED):
        return "ops"
    date = data.get("date", "")
    if event_type.startswith("patient_"):
        return f"patients:{date}"
    return f"schedule:{date}"


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
        tail = f'"type":{json.dumps(event_type)},"ts":"{ts}","data":{payload}}}'
        return ts, [self._maxlen, self._sender, event_type, ts, payload, tail, self._channel]


def envelope_from_entry(stream_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """Rebuild the envelope of one ``agent_updates`` entry (for replay)."""
    return {
        "id": stream_id,
        "type": fields.get("action", ""),
        "ts": fields.get("ts", ""),
        "data": json.loads(fields.get("payload") or "{}"),
    }


def read_since(client: redis.Redis, since: str, *, count: int = 1000) -> list[dict[str, Any]]:
    """Envelopes appended after stream id ``since`` (exclusive), oldest first, at most ``count``."""
    entries = client.xrange(keys.AGENT_UPDATES, min=f"({since}", max="+", count=count)
    return [envelope_from_entry(entry_id, fields) for entry_id, fields in entries]


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """Sort key of a stream id ``ms-seq`` (ids compare as numbers, not as text)."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)
