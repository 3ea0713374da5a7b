"""The relay: which sockets want which topics, and the fan-out of each event to them.

One :class:`Relay` per API process (per app). Its :class:`EventSubscriber` thread is the only writer of
events: for each event it finds the topic's sockets, builds the WebSocket frame once and writes the same
bytes to each with a non-blocking send (see app/realtime/connection.py). The registry is copy-on-write: the
subscriber reads ``topic -> tuple of sockets`` without a lock, handler threads replace the tuples under one.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from functools import cached_property
from typing import Any

import redis
from flask import Flask

from app.realtime.connection import ClientSocket, LockedSocket
from app.realtime.frame import text_frame
from app.realtime.stream import entries_after, trimmed_past
from app.realtime.subscriber import EventSubscriber
from config import Settings
from tasks.connections import make_redis
from tasks.events import StreamKey, stream_id_key, topic_of

log = logging.getLogger(__name__)

EXTENSION_KEY = "ws_relay"

MAX_PENDING = 1000  # live events parked behind one socket's replay before it is dropped as too slow
HANDLER_SEND_TIMEOUT_S = 10.0  # a reply or a replay that cannot be written in this long drops the socket
READY_TIMEOUT_S = 5.0  # how long a subscribe waits for the subscriber to be on the channel


class SocketRefused(Exception):
    """A socket over one of the connection caps (closed with 4429)."""


class Relay:
    """The sockets of one API process and the subscriber that feeds them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._clients: set[ClientSocket] = set()
        # Open sockets per client IP and per token subject, and those not authenticated yet: the caps.
        self._per_ip: Counter[str] = Counter()
        self._per_user: Counter[str] = Counter()
        self._unauthenticated = 0
        self._by_topic: dict[str, tuple[ClientSocket, ...]] = {}
        self._subscriber: EventSubscriber | None = None
        self.closing = False
        self.dropped = 0

    @cached_property
    def redis(self) -> redis.Redis:
        """A client for replays (the handler threads'); the subscriber has its own connection."""
        return make_redis(self.settings)

    # Sockets come and go (handler threads).

    def attach(self, ws: Any, ip: str = "", subject: str | None = None) -> ClientSocket | None:
        """Register a connected socket (no topics yet) from ``ip``, authenticated as ``subject`` (None: not
        yet); None while the process is shutting down; SocketRefused over a cap (WS_MAX_*)."""
        out = ws.sock
        assert isinstance(out, LockedSocket), (
            "app/realtime/endpoint.py swaps a LockedSocket in before the reader starts"
        )
        out.tune(self.settings.ws_send_buffer_bytes)
        client = ClientSocket(ws, out, max_pending=MAX_PENDING, send_timeout_s=HANDLER_SEND_TIMEOUT_S)
        client.ip = ip
        with self._lock:
            if self.closing:
                return None
            if self._per_ip[ip] >= self.settings.ws_max_per_ip:
                raise SocketRefused("too many sockets from this address")
            if subject is None and self._unauthenticated >= self.settings.ws_max_unauthenticated:
                raise SocketRefused("too many sockets waiting to authenticate")
            if subject is not None:
                self._count_user_locked(client, subject)
            else:
                self._unauthenticated += 1
            self._per_ip[ip] += 1
            self._clients.add(client)
            self._start_subscriber_locked()
        return client

    def identify(self, client: ClientSocket, subject: str) -> None:
        """The socket authenticated (or re-authenticated) as ``subject``; SocketRefused over its user cap."""
        with self._lock:
            if client not in self._clients or client.subject == subject:
                return
            if self._per_user[subject] >= self.settings.ws_max_per_user:
                raise SocketRefused("too many sockets for this user")
            if client.subject is None:
                self._unauthenticated -= 1
            else:
                self._uncount_user_locked(client)
            self._per_user[subject] += 1
            client.subject = subject

    def _count_user_locked(self, client: ClientSocket, subject: str) -> None:
        if self._per_user[subject] >= self.settings.ws_max_per_user:
            raise SocketRefused("too many sockets for this user")
        self._per_user[subject] += 1
        client.subject = subject

    def _uncount_user_locked(self, client: ClientSocket) -> None:
        if client.subject is not None:
            self._per_user[client.subject] -= 1
            if self._per_user[client.subject] <= 0:
                del self._per_user[client.subject]
            client.subject = None

    def detach(self, client: ClientSocket) -> None:
        """Forget a socket whose handler is returning."""
        with self._lock:
            if client not in self._clients:
                return
            self._clients.discard(client)
            self._set_topics_locked(client, frozenset())
            if client.subject is None:
                self._unauthenticated -= 1
            self._uncount_user_locked(client)
            self._per_ip[client.ip] -= 1
            if self._per_ip[client.ip] <= 0:
                del self._per_ip[client.ip]

    def set_topics(self, client: ClientSocket, topics: frozenset[str]) -> None:
        """Make the socket receive exactly ``topics`` from now on."""
        with self._lock:
            if client in self._clients:
                self._set_topics_locked(client, topics)

    def _set_topics_locked(self, client: ClientSocket, topics: frozenset[str]) -> None:
        for topic in client.topics - topics:
            rest = tuple(other for other in self._by_topic.get(topic, ()) if other is not client)
            if rest:
                self._by_topic[topic] = rest
            else:
                self._by_topic.pop(topic, None)
        for topic in topics - client.topics:
            self._by_topic[topic] = (*self._by_topic.get(topic, ()), client)
        client.topics = topics

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> bool:
        """True once the subscriber is on the channel (a replay read before that could leave a gap)."""
        subscriber = self._subscriber
        return subscriber is not None and subscriber.ready.wait(timeout_s)

    def replay_entries(self, topics: frozenset[str], since: str) -> list[tuple[str, bytes]] | None:
        """The events of ``topics`` after ``since`` in the stream; None when more than WS_REPLAY_MAX_EVENTS
        entries follow ``since`` (the client refetches over REST instead: a replay reads a bounded amount).

        Read inside ``client.exclusive()`` after the topics are set: live events meanwhile wait and follow
        without duplicates.
        """
        bound = self.settings.ws_replay_max_events
        read = list(entries_after(self.redis, since, limit=bound + 1))
        if len(read) > bound:
            return None
        return [(entry_id, text) for entry_id, text in read if _topic_of_text(text) in topics]

    @staticmethod
    def replay(
        client: ClientSocket, entries: list[tuple[str, bytes]], topics: frozenset[str], since: str
    ) -> int:
        """Send the socket ``entries`` (from :meth:`replay_entries` of ``topics`` after ``since``); how many
        were sent. Marks the topics replayed up to the last one sent (or ``since``, which the client has)."""
        sent = 0
        upto = stream_id_key(since)
        for entry_id, text in entries:
            if not client.send(text_frame(text)):
                return sent
            upto = max(upto, stream_id_key(entry_id))
            sent += 1
        client.mark_replayed(topics, upto)
        return sent

    def replay_has_gap(self, since: str) -> bool:
        return trimmed_past(self.redis, since)

    # Events (subscriber thread).

    def fan_out(self, key: StreamKey, event: dict[str, Any], text: bytes) -> None:
        """Write one event to every socket subscribed to its topic; drop those that cannot keep up."""
        topic = _topic_of_event(event)
        clients = self._by_topic.get(topic)
        if not clients:
            return
        frame = text_frame(text)
        dropped = [client for client in clients if not client.deliver(key, frame, topic)]
        if dropped:
            self.dropped += len(dropped)
            log.warning("relay dropped %d slow websocket(s)", len(dropped))
            with self._lock:
                for client in dropped:
                    self._set_topics_locked(client, frozenset())

    # Process lifecycle.

    def _start_subscriber_locked(self) -> None:
        if self._subscriber is None:
            self._subscriber = EventSubscriber(self.settings, self.fan_out)
            self._subscriber.start()

    def shutdown(self, code: int, reason: str) -> int:
        """Close every socket with ``code`` (1001 on SIGTERM) and stop the subscriber; how many were open."""
        with self._lock:
            self.closing = True
            clients = list(self._clients)
            subscriber = self._subscriber
        if subscriber is not None:
            subscriber.stop(timeout_s=0)
        for client in clients:
            client.close(code, reason)
        log.info("relay closed %d websocket(s) with %d", len(clients), code)
        return len(clients)

    @property
    def socket_count(self) -> int:
        return len(self._clients)


def _topic_of_text(text: bytes) -> str:
    return _topic_of_event(json.loads(text))


def _topic_of_event(event: dict[str, Any]) -> str:
    data = event.get("data")
    return topic_of(str(event.get("type", "")), data if isinstance(data, dict) else {})


def init_app(app: Flask, settings: Settings) -> Relay:
    relay = Relay(settings)
    app.extensions[EXTENSION_KEY] = relay
    return relay


def relay_of(app: Flask) -> Relay:
    found: Relay = app.extensions[EXTENSION_KEY]
    return found
