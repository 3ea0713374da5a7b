"""``/ws``: the browser's live feed. The handler only registers the socket and reads client messages.

Events are written by the relay's subscriber thread (app/realtime/relay.py), never by this handler's thread,
except for the replay a ``subscribe`` with ``since`` asks for (while the socket is held, see
app/realtime/connection.py). The protocol, close codes and error codes are in app/realtime/protocol.py and
docs/realtime.md.

Two changes to flask-sock/simple-websocket's defaults, both made here:
* permessage-deflate is declined: simple-websocket accepts any extension the client offers, so the offer is
  removed from the request before the handshake (compressing per socket nearly doubled p95: docs/realtime.md,
  "Why this design").
* every write goes through one lock: simple-websocket's reader thread writes pings, pongs and close replies
  on the same socket the subscriber writes events to. Its ``thread_class`` option is the one hook that runs
  after the handshake and before the reader thread starts; :class:`_ReaderThread` swaps ``ws.sock`` for a
  :class:`LockedSocket` there, so from the reader's first write on there is a single door to the socket.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

import redis
from flask import Flask, Response, current_app, g, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from app import ratelimit, trusted_hosts
from app.errors import error_response
from app.realtime import access
from app.realtime import protocol as proto
from app.realtime.access import SocketAuthError
from app.realtime.connection import ClientSocket, LockedSocket
from app.realtime.frame import text_frame
from app.realtime.relay import Relay, SocketRefused, relay_of
from app.realtime.relay import init_app as init_relay

log = logging.getLogger(__name__)

PATH = "/ws"
REPLAY_COST = 10  # rate-limit tokens a subscribe-with-since costs (a REST read costs 1): bounded replays

sock = Sock()


class _ReaderThread(threading.Thread):
    """simple-websocket's reader thread; puts a :class:`LockedSocket` in front of the raw socket first."""

    def __init__(self, target: Any) -> None:
        server = target.__self__  # target is the bound Server._thread: this is the simple_websocket.Server
        server.sock = LockedSocket(server.sock)
        super().__init__(target=target, daemon=True)


@sock.route(PATH)
def relay_socket(ws: Any) -> None:
    """One client: authenticate, then answer its messages until it goes away."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    settings = app.config["CLINIC_SETTINGS"]
    ip = ratelimit.client_ip(
        request.remote_addr, request.headers.get("X-Forwarded-For"), settings.trusted_proxies
    )
    Session(app, ws, g.get("ws_claims"), ip).run()


class Session:
    """The conversation with one socket, on its flask-sock handler thread."""

    def __init__(self, app: Flask, ws: Any, claims: dict[str, Any] | None, ip: str = "") -> None:
        self.app = app
        self.ws = ws
        self.ip = ip
        self.relay: Relay = relay_of(app)
        self.authenticate = access.authenticator(app)
        settings = app.config["CLINIC_SETTINGS"]
        self.auth_timeout_s = float(app.config.get("WS_AUTH_TIMEOUT_S", settings.ws_auth_timeout_s))
        self.claims = claims
        self.may_subscribe = access.topic_authorizer(app)

    def run(self) -> None:
        subject = None if self.claims is None else str(self.claims.get("sub", ""))
        try:
            client = self.relay.attach(self.ws, self.ip, subject)
        except SocketRefused as exc:  # over a cap: the thread is given back at once
            self.ws.sock.seal(proto.CLOSE_TOO_MANY, str(exc))
            return
        if client is None:  # shutting down: go elsewhere
            self.ws.sock.seal(proto.CLOSE_GOING_AWAY, "server shutting down")
            return
        client.claims = self.claims
        try:
            if self.claims is None and not self._first_message(client):
                return
            while not client.closed:
                raw = self.ws.receive(timeout=self._until_expiry())
                if raw is not None:
                    self._handle_raw(client, raw)
                elif self._until_expiry() == 0:
                    self._reply(client, proto.error_message(proto.UNAUTHORIZED, "The token expired."))
                    client.close(proto.CLOSE_UNAUTHORIZED, "token expired")
        except ConnectionClosed:
            pass
        finally:
            self.relay.detach(client)

    def _until_expiry(self) -> float | None:
        """Seconds until the token's ``exp`` (0 once past; the socket then closes 4401), None without one."""
        expires = (self.claims or {}).get("exp")
        if not isinstance(expires, int | float):
            return None
        return max(0.0, float(expires) - time.time())

    def _first_message(self, client: ClientSocket) -> bool:
        """Without a header token the first message must come within the auth timeout; False: closed."""
        deadline = time.monotonic() + self.auth_timeout_s
        while not client.closed:
            raw = self.ws.receive(timeout=max(0.0, deadline - time.monotonic()))
            if raw is None:
                self._reply(client, proto.error_message(proto.UNAUTHORIZED, "No authentication in time."))
                client.close(proto.CLOSE_AUTH_TIMEOUT, "authentication timeout")
                return False
            try:
                message = proto.parse(raw)
            except proto.ProtocolError as exc:
                self._reply(client, proto.error_message(exc.code, exc.message))
                continue
            if not self._authorize(client, message.token):
                return False
            if message.type == "auth":
                self._reply(client, proto.dumps({"type": "authenticated"}))
            else:
                self._handle(client, message)
            return True
        return False

    def _authorize(self, client: ClientSocket, token: str | None) -> bool:
        try:
            claims = self.authenticate(token)
            self.relay.identify(client, str(claims.get("sub", "")))
        except SocketAuthError as exc:
            self._reply(client, proto.error_message(proto.UNAUTHORIZED, str(exc) or "Not authenticated."))
            client.close(proto.CLOSE_UNAUTHORIZED, "unauthorized")
            return False
        except SocketRefused as exc:
            self._reply(client, proto.error_message(proto.TOO_MANY_SOCKETS, f"Refused: {exc}."))
            client.close(proto.CLOSE_TOO_MANY, str(exc))
            return False
        self.claims = client.claims = claims
        return True

    def _reauthorize(self, client: ClientSocket, token: str) -> None:
        """A fresh token: the socket keeps only the topics the new token covers (it may grant less)."""
        if not self._authorize(client, token):
            return
        kept = frozenset(topic for topic in client.topics if self.may_subscribe(self.claims or {}, topic))
        reply: dict[str, Any] = {"type": "authenticated"}
        with client.exclusive():
            if kept != client.topics:
                reply["dropped"] = sorted(client.topics - kept)
                reply["topics"] = sorted(kept)
                self.relay.set_topics(client, kept)
            client.send(text_frame(proto.dumps(reply)))

    def _handle_raw(self, client: ClientSocket, raw: str | bytes) -> None:
        try:
            message = proto.parse(raw)
        except proto.ProtocolError as exc:
            self._reply(client, proto.error_message(exc.code, exc.message))
            return
        self._handle(client, message)

    def _handle(self, client: ClientSocket, message: proto.ClientMessage) -> None:
        if message.type == "auth":  # a fresh token (e.g. before the old one expires)
            self._reauthorize(client, message.token or "")
        elif message.type == "subscribe":
            self._subscribe(client, frozenset(message.topics), message.since)
        elif message.type == "unsubscribe":
            topics = client.topics - frozenset(message.topics)
            with client.exclusive():
                self.relay.set_topics(client, topics)
                client.send(text_frame(proto.dumps({"type": "unsubscribed", "topics": sorted(topics)})))
        else:
            self._reply(client, proto.dumps({"type": "pong"}))

    def _subscribe(self, client: ClientSocket, topics: frozenset[str], since: str | None) -> None:
        refused = sorted(topic for topic in topics if not self.may_subscribe(self.claims or {}, topic))
        if refused:
            message = f"The token does not allow topic {refused[0]!r}."
            self._reply(client, proto.error_message(proto.FORBIDDEN, message))
            return
        wanted = client.topics | topics
        if len(wanted) > proto.MAX_TOPICS:
            message = f"At most {proto.MAX_TOPICS} topics per socket."
            self._reply(client, proto.error_message(proto.TOO_MANY_TOPICS, message))
            return
        # "subscribed" promises live events from now on: not before the subscriber is on the channel (a
        # fresh process's first sockets would otherwise miss what is published in between).
        if not self.relay.wait_ready():
            self._unavailable(client)
            return
        fresh = topics - client.topics  # replay only what the socket was not already receiving live
        try:
            # A replay reads the stream: it costs REPLAY_COST of the caller's REST budget (IP + user), so a
            # loop of subscribe-with-since is rate-limited like any other read.
            wants_replay = since is not None and bool(fresh)
            limited = wants_replay and not self._may_replay(client)
            with client.exclusive():
                self.relay.set_topics(client, wanted)
                reply: dict[str, Any] = {"type": "subscribed", "topics": sorted(wanted)}
                replay_from = since if wants_replay and not limited else None
                entries = self.relay.replay_entries(fresh, replay_from) if replay_from is not None else []
                if since is not None and (limited or entries is None or self.relay.replay_has_gap(since)):
                    # Trimmed past since, more than WS_REPLAY_MAX_EVENTS behind, or over the rate limit:
                    # the client refetches over REST (live events flow from now on either way).
                    reply["replay_gap"] = True
                if client.send(text_frame(proto.dumps(reply))) and replay_from is not None and entries:
                    self.relay.replay(client, entries, fresh, replay_from)
        except (redis.ConnectionError, redis.TimeoutError):
            self._unavailable(client)

    def _may_replay(self, client: ClientSocket) -> bool:
        identity = f"{self.ip}|{client.subject or '-'}"
        return ratelimit.limiter(self.app).take(identity, REPLAY_COST).allowed

    def _unavailable(self, client: ClientSocket) -> None:
        message = "Events are unavailable; reconnect with since."
        self._reply(client, proto.error_message(proto.SERVICE_UNAVAILABLE, message))
        client.close(proto.CLOSE_TRY_AGAIN_LATER, "events unavailable")

    @staticmethod
    def _reply(client: ClientSocket, body: bytes) -> None:
        with client.exclusive():
            client.send(text_frame(body))


def _before_socket() -> Response | None:
    """Before the handshake: decline permessage-deflate; check a header token (refused: HTTP 401)."""
    if request.path != PATH:
        return None
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return error_response("VALIDATION_ERROR", "This endpoint speaks WebSocket only.", status=400)
    request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
    trusted_hosts.check_socket_origin(current_app, current_app.config["CLINIC_SETTINGS"])  # 403: hijacking
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    try:
        if scheme.lower() != "bearer" or not token.strip():
            raise SocketAuthError("Use an Authorization: Bearer <token> header.")
        g.ws_claims = access.authenticator(current_app)(token.strip())
    except SocketAuthError as exc:
        return error_response("UNAUTHORIZED", str(exc) or "Not authenticated.")
    return None


def init_app(app: Flask) -> None:
    """Register /ws and its relay (the socket's authenticator and topic policy are app/auth.py's)."""
    settings = app.config["CLINIC_SETTINGS"]
    init_relay(app, settings)
    app.config.setdefault(
        "SOCK_SERVER_OPTIONS",
        {
            "ping_interval": settings.ws_ping_interval_s,
            "max_message_size": proto.MAX_MESSAGE_BYTES,
            "thread_class": _ReaderThread,
        },
    )
    app.before_request(_before_socket)
    sock.init_app(app)


def close_sockets_on_sigterm(app: Flask) -> None:
    """In a gunicorn worker: on SIGTERM close every socket with 1001 before gunicorn cuts them (1005).

    gthread's SIGTERM handler only stops accepting and waits up to ``graceful_timeout`` for open requests,
    which for a socket means until it is cut. Chained in front of it, this closes them properly first;
    the closing runs on its own thread (a signal handler must not take the locks the relay uses).
    """
    relay = relay_of(app)
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        threading.Thread(
            target=relay.shutdown, args=(proto.CLOSE_GOING_AWAY, "server shutting down"), daemon=True
        ).start()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
