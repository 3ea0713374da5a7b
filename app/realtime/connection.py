"""One client socket as the relay sees it: every write under one lock, never a blocking write for events.

Three threads write to a client's TCP socket: the relay's subscriber (events), the flask-sock handler
(replies, replay) and simple-websocket's reader thread (the handshake answer, pings, pongs, close replies).
simple-websocket has no lock of its own, so :class:`LockedSocket` stands in for the raw socket inside the
``simple_websocket.Server`` object (see ``app/realtime/endpoint.py`` for where it is swapped in): the reader
thread's ``sock.send`` and the relay's frames then go through the same lock, and frames never interleave.

A write from the subscriber never waits: it is one ``send(MSG_DONTWAIT)``; if the kernel buffer cannot take
the whole frame the socket is dropped (a short write leaves half a frame on the wire, and a full buffer
means the client stopped reading). Its client reconnects and replays with ``since``. Without this rule one
stalled client froze every other socket (docs/realtime.md, "Why this design").
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from app.realtime.frame import close_frame
from tasks.events import StreamKey

log = logging.getLogger(__name__)

_SEND_FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL


class LockedSocket:
    """The raw TCP socket behind one WebSocket; the one door every write goes through."""

    def __init__(self, raw: socket.socket) -> None:
        self._raw = raw
        self._lock = threading.Lock()
        self._sealed = False  # our close frame is out: later writes are dropped quietly
        self.broken = False  # dropped: shut down, nothing more is written

    # What simple-websocket's reader thread calls on ``ws.sock``.
    def recv(self, size: int) -> bytes:
        return self._raw.recv(size)

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()

    def send(self, data: bytes) -> int:
        """simple-websocket's writes (pings, pongs, close replies): all at once, or the socket is dropped."""
        if not self.write_nowait(data):
            raise BrokenPipeError("websocket dropped")
        return len(data)

    sendall = send

    def tune(self, send_buffer_bytes: int) -> None:
        """Small frames go out at once (no Nagle delay); the kernel buffer bounds how far a client may lag."""
        try:
            self._raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
        except OSError:  # a socket that is already gone; the reader thread notices
            pass

    def write_nowait(self, data: bytes) -> bool:
        """Write all of ``data`` without waiting; False (and the socket is shut down) if it did not fit."""
        with self._lock:
            if self._sealed:
                return True
            if self.broken:
                return False
            try:
                sent = self._raw.send(data, _SEND_FLAGS)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = -1
            if sent == len(data):
                return True
            self._break_locked()
            return False

    def write_wait(self, data: bytes, timeout_s: float) -> bool:
        """Write all of ``data``, waiting up to ``timeout_s`` for room (handler replies and replays only).

        Holds the lock while it waits: the subscriber does not write to this socket meanwhile (the socket is
        held, see :meth:`ClientSocket.exclusive`), so only the reader thread's pongs wait behind it.
        """
        deadline = time.monotonic() + timeout_s
        with self._lock:
            if self._sealed:
                return True
            if self.broken:
                return False
            view = memoryview(data)
            poller = select.poll()  # not select(): descriptors run past 1,024 at 1,000 sockets
            poller.register(self._raw.fileno(), select.POLLOUT)
            while view:
                try:
                    view = view[self._raw.send(view, _SEND_FLAGS) :]
                    continue
                except BlockingIOError:
                    pass
                except OSError:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                poller.poll(remaining * 1000)
            if not view:
                return True
            self._break_locked()
            return False

    def seal(self, code: int, reason: str) -> None:
        """Send our close frame (if it fits) and let nothing more out."""
        with self._lock:
            if self._sealed or self.broken:
                return
            with suppress(OSError):
                self._raw.send(close_frame(code, reason), _SEND_FLAGS)
            self._sealed = True

    def drop(self) -> None:
        """Shut the connection down now: the reader thread wakes from ``recv`` and the handler returns."""
        with self._lock:
            self._break_locked()

    def _break_locked(self) -> None:
        if self.broken:
            return
        self.broken = True
        with suppress(OSError):
            self._raw.shutdown(socket.SHUT_RDWR)


class ClientSocket:
    """A client socket registered with the relay: its topics and how events reach it.

    Normally the subscriber writes each event straight to it (:meth:`deliver`). While the handler thread
    writes (a reply, or a replay from the stream) the socket is *held*: live events wait in a bounded list
    and follow once the handler is done. A replay leaves a mark per topic (:meth:`mark_replayed`): a live
    copy of an event the replay already sent is skipped, whether it was parked or its pub/sub message comes
    later still (a subscriber that lags behind under load), and an event of a topic the replay did not cover
    is never skipped because of it.
    """

    def __init__(self, ws: Any, out: LockedSocket, *, max_pending: int, send_timeout_s: float) -> None:
        self.ws = ws  # simple_websocket.Server
        self.out = out
        self.topics: frozenset[str] = frozenset()
        self.claims: dict[str, Any] | None = None
        self.ip = ""  # the client's address and token subject, for the relay's connection caps
        self.subject: str | None = None
        self.closed = False
        self._max_pending = max_pending
        self._send_timeout_s = send_timeout_s
        self._state = threading.Lock()  # guards held/pending/closed; taken before LockedSocket's lock
        self._held = False
        self._pending: list[tuple[StreamKey, bytes, str]] = []
        self._replayed: dict[str, StreamKey] = {}  # topic → the newest stream id a replay covered for it

    def deliver(self, key: StreamKey, frame: bytes, topic: str) -> bool:
        """Subscriber thread: write one event frame of ``topic``, or park it while held; skip it when a replay
        already sent it. False: the socket was dropped."""
        with self._state:
            if self.closed:
                return False
            if self._replayed_already(topic, key):
                return True
            if self._held:
                if len(self._pending) < self._max_pending:
                    self._pending.append((key, frame, topic))
                    return True
                log.info("websocket dropped: %d events waiting behind a replay", len(self._pending))
            elif self.out.write_nowait(frame):
                return True
            self.closed = True
        self.out.drop()
        return False

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Handler thread: hold live events while it writes; then send them, skipping what it already sent."""
        with self._state:
            self._held = True
        try:
            yield
        finally:
            self._release()

    def send(self, frame: bytes) -> bool:
        """Handler thread, inside :meth:`exclusive`: write a reply, or a replayed event."""
        if self.closed:
            return False
        if self.out.write_wait(frame, self._send_timeout_s):
            return True
        self.drop()
        return False

    def mark_replayed(self, topics: frozenset[str], upto: StreamKey) -> None:
        """Handler thread, inside :meth:`exclusive`, after a replay of ``topics`` sent each of their events up
        to ``upto``: a live copy of any of them (parked, or arriving later) is not sent again."""
        with self._state:
            for topic in topics:
                known = self._replayed.get(topic)
                self._replayed[topic] = upto if known is None or upto > known else known

    def _replayed_already(self, topic: str, key: StreamKey) -> bool:
        upto = self._replayed.get(topic)
        return upto is not None and key <= upto

    def _release(self) -> None:
        while True:
            with self._state:
                batch, self._pending = self._pending, []
                if not batch or self.closed:
                    self._held = False
                    self._pending = []
                    return
            for key, frame, topic in batch:
                if self._replayed_already(topic, key):
                    continue  # the replay already sent it: the replay/live seam
                if not self.send(frame):
                    return

    def close(self, code: int, reason: str) -> None:
        """Any thread: send a close frame with ``code`` and end the handler's wait."""
        with self._state:
            if self.closed:
                return
            self.closed = True
        self.out.seal(code, reason)
        # simple-websocket: receive() raises ConnectionClosed once it sees connected False and is woken.
        self.ws.connected = False
        self.ws.event.set()

    def drop(self) -> None:
        """Any thread: cut the connection without a close frame (the client sees 1006 and reconnects)."""
        with self._state:
            self.closed = True
        self.out.drop()
