"""A client socket is written without ever blocking the writer: a full buffer drops it, and events parked
behind a replay follow it without duplicates. Real kernel sockets (socket pairs)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from app.realtime.connection import ClientSocket, LockedSocket
from app.realtime.frame import text_frame


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair of Unix stream sockets: (server side, client side)."""
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


def make_client(server: socket.socket) -> ClientSocket:
    ws = SimpleNamespace(connected=True, event=threading.Event())  # what ClientSocket touches of a Server
    out = LockedSocket(server)
    out.tune(16384)
    return ClientSocket(ws, out, max_pending=3, send_timeout_s=0.2)


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(0.2)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pass
    return data


def test_a_socket_whose_buffer_is_full_is_dropped_without_blocking(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, peer = pair
    client = make_client(server)
    frame = text_frame(b"x" * 4000)
    delivered = 0
    while client.deliver((1, delivered), frame, "t"):
        delivered += 1
        assert delivered < 10_000, "never filled up"
    assert client.closed and client.out.broken
    assert not client.deliver((2, 0), frame, "t")  # stays dropped
    assert peer.recv(1)  # what fitted is readable, then the shutdown ends the stream


def test_events_parked_behind_a_replay_follow_it_without_duplicates(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, peer = pair
    client = make_client(server)
    with client.exclusive():
        client.deliver((5, 0), text_frame(b"e5"), "t")  # live, while the replay runs: parked
        client.deliver((6, 0), text_frame(b"e6"), "t")
        for name in [b"e4", b"e5"]:  # the replay also read e5 from the stream
            client.send(text_frame(name))
        client.mark_replayed(frozenset({"t"}), (5, 0))
    client.deliver((7, 0), text_frame(b"e7"), "t")
    assert read_all(peer) == b"".join(text_frame(name) for name in [b"e4", b"e5", b"e6", b"e7"])


def test_a_live_copy_that_comes_after_the_replay_ended_is_not_sent_again(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # Under load the relay's subscriber can lag behind the stream: the pub/sub copy of an event the replay
    # read arrives after the socket was released, and must not reach the client a second time.
    server, peer = pair
    client = make_client(server)
    with client.exclusive():
        for name in [b"e4", b"e5"]:
            client.send(text_frame(name))
        client.mark_replayed(frozenset({"t"}), (5, 0))
    assert client.deliver((5, 0), text_frame(b"e5"), "t")  # late: skipped, the socket stays
    client.deliver((6, 0), text_frame(b"e6"), "t")
    assert read_all(peer) == b"".join(text_frame(name) for name in [b"e4", b"e5", b"e6"])


def test_a_parked_event_of_a_topic_the_replay_did_not_cover_is_sent_whatever_its_id(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # The socket already follows "a" live and adds "t" with since: an "a" event older than the replay's last
    # "t" event, parked meanwhile, is not one the replay sent.
    server, peer = pair
    client = make_client(server)
    with client.exclusive():
        client.deliver((3, 0), text_frame(b"a3"), "a")
        for name in [b"t4", b"t5"]:
            client.send(text_frame(name))
        client.mark_replayed(frozenset({"t"}), (5, 0))
    client.deliver((2, 0), text_frame(b"a2-late"), "a")  # a late "a" copy: never replayed, so sent
    assert read_all(peer) == b"".join(text_frame(name) for name in [b"t4", b"t5", b"a3", b"a2-late"])


def test_too_many_parked_events_drop_the_socket(pair: tuple[socket.socket, socket.socket]) -> None:
    server, _ = pair
    client = make_client(server)
    with client.exclusive():
        results = [client.deliver((n, 0), text_frame(b"e"), "t") for n in range(4)]
    assert results == [True, True, True, False]
    assert client.closed


def test_close_sends_one_close_frame_and_nothing_after(pair: tuple[socket.socket, socket.socket]) -> None:
    server, peer = pair
    client = make_client(server)
    client.close(1001, "bye")
    assert not client.deliver((1, 0), text_frame(b"late"), "t")
    client.out.send(b"a pong from the reader thread")  # after the close frame: quietly dropped
    assert read_all(peer) == b"\x88\x05\x03\xe9bye"
    assert client.ws.event.is_set() and not client.ws.connected
