"""Publish-to-receipt latency of the /ws relay at N sockets, beside Redis pub/sub itself as the floor.

    .venv/bin/python -m bench.relay_latency --sockets 10 100 1000 --rate 50 --seconds 10

One run per N: the API under gunicorn (app/gunicorn_conf.py, one process) on Redis db 12; a client process
opens N WebSockets subscribed to the benchmark's day, another opens N plain Redis subscribers on the
``events`` channel (the floor: Redis fanning the same events out to N sockets); this process publishes
with tasks.events.EventPublisher at a fixed rate (open loop: on schedule, whatever the receivers do),
each event carrying its publish time. Latency = receipt - publish, for every event at every socket.

The clients are lean on purpose (a Python client at 1,000 sockets can be the bottleneck itself;
docs/realtime.md, "Why this design"):
raw non-blocking sockets read by an asyncio loop through ``add_reader`` (no transports, no WebSocket
library, the payload scanned for the publish time rather than parsed), and the receipt time is when epoll
reported the socket readable (the loop's selector is timed), not when Python got round to its callback.
Both kinds of client are measured the same way, so the floor carries the same client cost.
Results: a table on stdout and bench/results/relay_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import (
    BIN,
    RESULTS,
    ROOT,
    TOKEN_VARIABLE,
    dev_token,
    percentiles,
    raise_file_limit,
    start_api,
)
from tests.support.processes import free_port

# The relay's database (tests/integration/ws_support.py), on the test server TEST_REDIS_URL names.
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/11").rsplit("/", 1)[0] + "/12"
FLOOR_CHANNEL = "events:" + REDIS_URL.rsplit("/", 1)[1]
# The floor's raw subscriber reads the same server as the relay (not whatever answers on 6379).
REDIS_ADDRESS = (urlsplit(REDIS_URL).hostname or "127.0.0.1", urlsplit(REDIS_URL).port or 6379)
DAY = "2099-12-31"  # the benchmark's topic: nobody else publishes for it
MARK = b'"sent_ns":'
SEQ = b',"seq":'


class TimedSelector(selectors.EpollSelector):
    """An epoll selector that notes when each wait returned: the moment the data was known to be there."""

    woke_ns = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(timeout)
        self.woke_ns = time.time_ns()
        return ready


class Receiver:
    """One receiving socket: connected and subscribed (blocking), then read by the event loop."""

    def __init__(
        self,
        kind: str,
        port: int,
        selector: TimedSelector,
        warmup: int,
        sink: list[float],
        token: str = "",
    ) -> None:
        self.selector = selector
        self.warmup = warmup
        self.sink = sink
        self.count = 0
        self.lost = False
        address = ("127.0.0.1", port) if kind == "ws" else REDIS_ADDRESS
        self.sock = socket.create_connection(address, timeout=30)
        if kind == "ws":
            key = base64.b64encode(os.urandom(16)).decode()
            # A token in the handshake, as sync_latency's sockets send it: checked before the upgrade.
            self.sock.sendall(
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Authorization: Bearer {token}\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            buffer = self._read_until(b"", b"\r\n\r\n")
            self.sock.sendall(_masked_text(json.dumps({"type": "subscribe", "topics": [f"schedule:{DAY}"]})))
            self.buffer = self._read_until(buffer, b'"subscribed"')
        else:
            # The channel of db 12's events (tasks/keys.events_channel: "events" only on db 0).
            self.sock.sendall(f"SUBSCRIBE {FLOOR_CHANNEL}\r\n".encode())
            self.buffer = self._read_until(b"", b"subscribe\r\n")
        self.sock.setblocking(False)

    def _read_until(self, buffer: bytes, marker: bytes) -> bytes:
        while marker not in buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed while subscribing")
            buffer += chunk
        return buffer.partition(marker)[2]

    def on_readable(self) -> None:
        now = self.selector.woke_ns  # when epoll said the data was there
        try:
            data = self.sock.recv(16384)  # frames are ~150 bytes; a 256 KB buffer a call is costly
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.lost = True
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            return
        buffer = self.buffer + data if self.buffer else data
        position = 0
        while True:
            start = buffer.find(MARK, position)
            if start < 0:
                break
            middle = buffer.find(SEQ, start)
            end = buffer.find(b"}", middle) if middle >= 0 else -1
            if end < 0:
                position = start
                break
            self.count += 1
            if int(buffer[middle + len(SEQ) : end]) >= self.warmup:
                self.sink.append((now - int(buffer[start + len(MARK) : middle])) / 1e6)
            position = end
        self.buffer = buffer[position:] if buffer.find(MARK, position) >= 0 else buffer[-len(MARK) :]


def _masked_text(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    body = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


async def _receive(kind: str, n: int, port: int, events: int, warmup: int, wait_s: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    selector = loop._selector  # type: ignore[attr-defined]
    latencies: list[float] = []
    token = os.environ.get(TOKEN_VARIABLE, "")
    receivers = [Receiver(kind, port, selector, warmup, latencies, token) for _ in range(n)]
    for receiver in receivers:  # add_reader on raw sockets: no transport, no protocol, one callback a read
        loop.add_reader(receiver.sock.fileno(), receiver.on_readable)
    print("READY", flush=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(r.count < events and not r.lost for r in receivers):
        await asyncio.sleep(0.05)
    result = {
        "sockets": n,
        "expected": events * n,
        "received": sum(r.count for r in receivers),
        "closed_by_server": sum(r.lost for r in receivers),
        **{key: round(value, 2) for key, value in percentiles(latencies).items()},
    }
    for receiver in receivers:
        if not receiver.lost:
            loop.remove_reader(receiver.sock.fileno())
        receiver.sock.close()
    return result


def run_clients(args: argparse.Namespace) -> None:
    raise_file_limit(args.sockets[0] + 1000)
    loop = asyncio.SelectorEventLoop(TimedSelector())
    asyncio.set_event_loop(loop)
    result = loop.run_until_complete(
        _receive(args.role, args.sockets[0], args.port, args.events, args.warmup_events, args.wait)
    )
    print(json.dumps(result), flush=True)


def _spawn_clients(
    role: str, n: int, port: int, events: int, warmup: int, wait_s: float, token: str
) -> subprocess.Popen[str]:
    command = [str(BIN / "python"), "-m", "bench.relay_latency", "--role", role, "--sockets", str(n)]
    command += [
        "--port",
        str(port),
        "--events",
        str(events),
        "--warmup-events",
        str(warmup),
        "--wait",
        str(wait_s),
    ]
    env = {**os.environ, TOKEN_VARIABLE: token}
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)


def _publish(events: int, rate: float) -> float:
    """Publish ``events`` at ``rate`` per second on a fixed schedule; the achieved rate."""
    import redis

    from tasks.events import SCHEDULE_SYNCED, EventPublisher

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    publisher = EventPublisher(client, sender="bench", maxlen=10000)
    publisher.publish(SCHEDULE_SYNCED, {"date": "2099-12-30", "sent_ns": 0, "seq": -1})  # load the script
    started = time.monotonic()
    for seq in range(events):
        delay = started + seq / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        publisher.publish(SCHEDULE_SYNCED, {"date": DAY, "sent_ns": time.time_ns(), "seq": seq})
    elapsed = time.monotonic() - started
    client.close()
    return events / elapsed if elapsed else float("inf")


def run(args: argparse.Namespace) -> None:
    raise_file_limit(3 * max(args.sockets) + 1000)  # gunicorn inherits it: a socket, a reader, a pipe or two
    RESULTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = Path(tempfile.gettempdir()) / "relay_latency.api.log"  # the API's output, if it fails to start
    log.write_text("")
    api_env = {"REDIS_URL": REDIS_URL, "APP_ENV": "test", "LOG_LEVEL": "WARNING"}
    api = start_api(port, api_env, log)
    token = dev_token(api_env)
    warmup = int(args.rate * args.warmup)
    events = warmup + int(args.rate * args.seconds)
    rows: list[dict[str, Any]] = []
    print(HEADER)
    try:
        for n in args.sockets:
            wait_s = events / args.rate + 15
            clients = {
                role: _spawn_clients(role, n, port, events, warmup, wait_s, token) for role in ("ws", "redis")
            }
            for role, proc in clients.items():
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if line.strip() != "READY":
                    raise RuntimeError(f"{role} clients failed to connect: {line!r}")
            time.sleep(0.5)
            achieved = _publish(events, args.rate)
            row: dict[str, Any] = {"sockets": n, "rate": round(achieved, 1), "events": events - warmup}
            for role, proc in clients.items():
                out, _ = proc.communicate(timeout=wait_s + 30)
                row["relay" if role == "ws" else "floor"] = json.loads(out.strip().splitlines()[-1])
            rows.append(row)
            _print_row(row)
    finally:
        api.terminate()
        api.wait(20)
    document = {
        "benchmark": "relay_latency",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {
            "rate_per_s": args.rate,
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "api_processes": 1,
        },
        "unit": "ms",
        "results": rows,
    }
    out_path = RESULTS / "relay_latency.json"
    out_path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwritten {out_path.relative_to(ROOT)}")


HEADER = (
    f"{'sockets':>8} {'ev/s':>6} | {'relay p50':>9} {'p95':>7} {'p99':>7} {'max':>7}"
    f" {'received':>9} {'drop':>4} | {'floor p50':>9} {'p95':>7} {'p99':>7} {'max':>7}"
)


def _print_row(row: dict[str, Any]) -> None:
    relay, floor = row["relay"], row["floor"]
    cells = [f"{row['sockets']:>8} {row['rate']:>6} |"]
    cells += [f"{relay[key]:>{9 if key == 'p50' else 7}}" for key in ("p50", "p95", "p99", "max")]
    cells += [f"{relay['received']:>9} {relay['closed_by_server']:>4} |"]
    cells += [f"{floor[key]:>{9 if key == 'p50' else 7}}" for key in ("p50", "p95", "p99", "max")]
    print(" ".join(cells), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--rate", type=float, default=50.0, help="events per second (open loop)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured publishing time per N")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of events not counted")
    parser.add_argument("--role", choices=["ws", "redis"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--warmup-events", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--wait", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        run_clients(args)
    else:
        run(args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
