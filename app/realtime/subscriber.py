"""The one Redis pub/sub subscriber of an API process: reads ``events`` and hands each event to the relay.

It reconnects by itself when Redis drops (exponential backoff with jitter, capped) and, once subscribed
again, replays ``agent_updates`` from the last id it saw, so no socket misses an event. The seam between
that replay and the live channel is closed by stream id: the channel carries each entry in stream order
(XADD and PUBLISH run in one Lua script), so a live event at or below the last replayed id is a duplicate.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.realtime.stream import entries_after, newest_id
from config import Settings
from tasks import connections, keys
from tasks.events import StreamKey, stream_id_key

log = logging.getLogger(__name__)

EventSink = Callable[[StreamKey, dict[str, Any], bytes], None]

BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 5.0
POLL_S = 1.0  # how often the loop looks at the stop flag when the channel is quiet
CLIENT_NAME = "clinic-relay:ws-subscriber"


class EventSubscriber:
    """A daemon thread subscribed to ``events``; ``sink(key, event, text)`` is called for each event."""

    def __init__(self, settings: Settings, sink: EventSink) -> None:
        self._settings = settings
        self._sink = sink
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once subscribed with a known position in the stream
        self.reconnects = 0
        self._last: str | None = None  # the newest stream id handed to the sink (or the baseline)
        self._seam: StreamKey | None = None  # live events at or below this were just replayed
        self._thread = threading.Thread(target=self._run, name="relay-subscriber", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _client(self) -> redis.Redis:
        # Bytes in, bytes out: the event text goes to the sockets as received. No hidden retries: redis-py
        # would reconnect and resubscribe by itself and we would never know to replay the gap.
        # With REDIS_SENTINELS each new session asks the sentinels for the primary: after a failover the
        # subscriber reconnects to the new one, subscribes again and replays the gap from the stream.
        return connections.client(
            self._settings,
            health_check_interval=15,  # PING an idle subscription: a silent half-open link is found
            client_name=CLIENT_NAME,  # how ops (and the reconnect test) find it in CLIENT LIST
            retry=Retry(NoBackoff(), 0),
        )

    def _run(self) -> None:
        backoff = BACKOFF_FIRST_S
        while not self._stop.is_set():
            try:
                self._session()
                return
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self.ready.clear()
                log.warning("relay subscriber lost Redis (%s); retry in %.2fs", type(exc).__name__, backoff)
            except Exception:  # never let the only writer die: log, back off, start over
                self.ready.clear()
                log.exception("relay subscriber failed; retrying in %.2fs", backoff)
            self._stop.wait(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            self.reconnects += 1

    def _session(self) -> None:
        client = self._client()
        pubsub = client.pubsub()
        try:
            pubsub.subscribe(keys.events_channel(client))
            # Wait for Redis to confirm the subscription before reading the stream: from then on every
            # event is on the channel, and everything before is in the stream.
            while pubsub.get_message(timeout=POLL_S) is None:
                if self._stop.is_set():
                    return
            if self._last is None:
                self._last = newest_id(client)
            else:
                self._replay(client)
            self.ready.set()
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=POLL_S)
                if message is not None and message["type"] == "message":
                    self._live(message["data"])
        finally:
            pubsub.close()
            client.close()

    def _replay(self, client: redis.Redis) -> None:
        assert self._last is not None
        count = 0
        for entry_id, text in entries_after(client, self._last, limit=self._settings.stream_maxlen):
            self._hand_over(text)
            self._seam = stream_id_key(entry_id)
            count += 1
        log.info("relay subscriber reconnected; replayed %d events after %s", count, self._last)

    def _live(self, text: bytes) -> None:
        if self._seam is not None:
            key = _key_of(text)
            if key is not None and key <= self._seam:
                return
            self._seam = None
        self._hand_over(text)

    def _hand_over(self, text: bytes) -> None:
        try:
            event = json.loads(text)
            key = stream_id_key(event["id"])
        except (ValueError, KeyError, TypeError):
            log.warning("relay subscriber skipped a malformed event (%d bytes)", len(text))
            return
        self._last = event["id"]
        self._sink(key, event, text)


def _key_of(text: bytes) -> StreamKey | None:
    """The stream id at the head of the channel's text (``{"id":"<id>",…``), without parsing the JSON."""
    if not text.startswith(b'{"id":"'):
        return None
    end = text.find(b'"', 7)
    try:
        return stream_id_key(text[7:end].decode())
    except ValueError:
        return None
