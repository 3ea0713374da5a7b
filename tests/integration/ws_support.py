"""Support for the /ws tests: the API under gunicorn on a free port, Redis db 12, a raw WebSocket client.

The relay's tests use Redis database 12 only (other suites use other databases) and flush only it. Note that
Redis pub/sub channels are server-wide: events another suite publishes on ``events`` reach our relay too, so
every test uses its own dates (topics) and asserts only on those. (In a parallel run each xdist worker has a
server of its own, tests/support/worker_redis.py: no other worker's events reach it.)
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import requests

from app.realtime.access import SocketAuthError
from tests.conftest import TEST_REDIS_URL
from tests.support.processes import BIN, free_port, spawn, stop, wait_until

# db 12 of the test server (TEST_REDIS_URL's host and port): never another session's Redis.
REDIS_URL = TEST_REDIS_URL.rsplit("/", 1)[0] + "/12"
OPEN_APP = "tests.integration.ws_support:open_app()"
STRICT_APP = "tests.integration.ws_support:strict_app()"
GOOD_TOKEN = "good-token"
SHORT_TOKEN = "short-token"  # accepted, expires 1 s after it is checked


@dataclass
class Api:
    """A running API process: its gunicorn master and where its socket endpoint is."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_api(log_dir: Path, *, target: str = OPEN_APP, env: dict[str, str] | None = None) -> Iterator[Api]:
    """Start ``gunicorn -c app/gunicorn_conf.py`` on a free port with REDIS_URL on db 12; stop it after."""
    port = free_port()
    log = log_dir / f"api-{port}.log"
    proc = spawn(
        [str(BIN / "gunicorn"), "-c", "app/gunicorn_conf.py", "--bind", f"127.0.0.1:{port}", target],
        {"APP_ENV": "test", "REDIS_URL": REDIS_URL, "LOG_LEVEL": "INFO", **(env or {})},
        log,
    )
    try:
        health = f"http://127.0.0.1:{port}/health"
        wait_until(lambda: requests.get(health, timeout=1).ok, 30, "api", proc, log)
        yield Api(proc, port, log)
    finally:
        stop(proc)


def let_any_socket_in(token: str | None) -> dict[str, Any]:
    """The relay tests' authenticator: every socket is let in, with or without a token."""
    return {"sub": "anonymous", "token_present": token is not None}


def allow_every_topic(claims: dict[str, Any], topic: str) -> bool:
    """The relay tests' topic policy: any socket may receive any topic."""
    return True


def open_app() -> Any:
    """The API with an authenticator that lets any socket in, whatever the auth settings say.

    The relay's tests are about delivery, not about tokens (those are tests/integration/test_auth.py's): they
    pin the hooks (app/realtime/access.py) to :func:`let_any_socket_in` and :func:`allow_every_topic`.
    """
    from app import create_app
    from app.realtime.access import EXTENSION_KEY, TOPIC_EXTENSION_KEY

    app = create_app()
    app.extensions[EXTENSION_KEY] = let_any_socket_in
    app.extensions[TOPIC_EXTENSION_KEY] = allow_every_topic
    return app


def strict_app() -> Any:
    """The API with an authenticator that accepts only GOOD_TOKEN (and SHORT_TOKEN, which expires in 1 s),
    a topic policy that keeps ``ops`` for ops tokens, and a 1 s first-message deadline.

    gunicorn target ``tests.integration.ws_support:strict_app()``: the hook the security layer will fill.
    """
    from app import create_app
    from app.realtime.access import EXTENSION_KEY, TOPIC_EXTENSION_KEY

    def only_good_token(token: str | None) -> dict[str, Any]:
        if token == SHORT_TOKEN:
            return {"sub": "tester", "scope": "read:schedule", "exp": time.time() + 1}
        if token != GOOD_TOKEN:
            raise SocketAuthError("Token refused.")
        return {"sub": "tester", "scope": "read:schedule"}

    def ops_for_ops_only(claims: dict[str, Any], topic: str) -> bool:
        return topic != "ops" or "ops:breaker" in str(claims.get("scope", "")).split()

    app = create_app()
    app.extensions[EXTENSION_KEY] = only_good_token
    app.extensions[TOPIC_EXTENSION_KEY] = ops_for_ops_only
    app.config["WS_AUTH_TIMEOUT_S"] = 1.0
    return app


def redis_db12() -> redis.Redis:
    """A client on db 12, flushed."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True, socket_timeout=5)
    client.flushdb()
    return client


def subscriber_ids(client: redis.Redis) -> list[str]:
    """CLIENT LIST ids of the relay's subscriber connections on db 12."""
    from app.realtime.subscriber import CLIENT_NAME

    found = client.client_list(_type="pubsub")
    return [
        str(info["id"]) for info in found if info.get("name") == CLIENT_NAME and str(info.get("db")) == "12"
    ]


class RawSocket:
    """A bare WebSocket client on a TCP socket: the test controls every read (or the lack of one)."""

    def __init__(self, port: int, *, recv_buffer: int | None = None) -> None:
        self.sock = socket.socket()
        if recv_buffer is not None:  # set before connect: the window the server may fill is this small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        return chunk

    def send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        size = len(payload)
        header = (
            struct.pack("!BB", 0x80 | opcode, 0x80 | size)
            if size < 126
            else struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        )
        self.sock.sendall(header + mask + masked)

    def send_json(self, body: dict[str, Any]) -> None:
        self.send_frame(0x1, json.dumps(body).encode())

    def read_frame(self) -> tuple[int, bytes]:
        """The next frame as (opcode, payload)."""
        while True:
            if len(self.buffer) >= 2:
                first, second = self.buffer[0], self.buffer[1]
                size, offset = second & 0x7F, 2
                if size == 126 and len(self.buffer) >= 4:
                    size, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
                elif size == 127 and len(self.buffer) >= 10:
                    size, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
                if (size < 126 or offset > 2) and len(self.buffer) >= offset + size:
                    payload = self.buffer[offset : offset + size]
                    self.buffer = self.buffer[offset + size :]
                    return first & 0x0F, payload
            self.buffer += self._recv()

    def close(self) -> None:
        self.sock.close()
