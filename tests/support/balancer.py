"""API instances behind real HAProxy with deploy/haproxy.cfg, and a WebSocket client that goes through it."""

from __future__ import annotations

import json
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import simple_websocket

from tests.support.processes import BIN, ROOT, free_port, spawn, wait_until
from tests.support.tls import Authority


@dataclass
class Balancer:
    proc: subprocess.Popen[bytes]
    url: str  # https://127.0.0.1:<port>
    ca: Path

    @property
    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def ws_url(self) -> str:
        return self.url.replace("https://", "wss://") + "/ws"


def start_api(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """One API instance under gunicorn on a free port, returned once /health answers."""
    port = free_port()
    proc = spawn(
        [str(BIN / "gunicorn"), "-c", "app/gunicorn_conf.py", "--bind", f"127.0.0.1:{port}", "app.wsgi:app"],
        env,
        log,
    )
    wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok, 30, "api", proc, log)
    return proc, port


def start_balancer(api_ports: list[int], folder: Path) -> Balancer:
    """HAProxy on a free port in front of two instances, with a certificate made here; once /ready passes."""
    authority = Authority(folder)
    pair = authority.issue("balancer")
    pem = folder / "balancer.pem"
    pem.write_bytes(pair.cert.read_bytes() + pair.key.read_bytes())
    port = free_port()
    env = {
        "RELAY_LB_BIND": f"127.0.0.1:{port}",
        "RELAY_LB_CERT": str(pem),
        "RELAY_API_1": f"127.0.0.1:{api_ports[0]}",
        "RELAY_API_2": f"127.0.0.1:{api_ports[1]}",
        "RELAY_LB_ADMIN": f"127.0.0.1:{free_port()}",
    }
    log = folder / "haproxy.log"
    proc = spawn(["haproxy", "-db", "-f", str(ROOT / "deploy" / "haproxy.cfg")], env, log)
    found = Balancer(proc, f"https://127.0.0.1:{port}", authority.ca.cert)
    ready = f"{found.url}/ready"
    wait_until(lambda: requests.get(ready, verify=str(found.ca), timeout=1).ok, 60, "balancer", proc, log)
    return found


def sockets_on(port: int) -> float:
    """How many sockets the instance on ``port`` holds (its /metrics, read on loopback)."""
    for line in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text.splitlines():
        if line.startswith("clinic_relay_websocket_connections "):
            return float(line.split()[1])
    return 0.0


def subscribe(
    balancer: Balancer, token: str, topics: list[str], since: str | None = None
) -> simple_websocket.Client:
    """A socket through the balancer, subscribed to ``topics`` (replaying after ``since``)."""
    ws = simple_websocket.Client.connect(
        balancer.ws_url(), headers={"Authorization": f"Bearer {token}"}, ssl_context=balancer.context
    )
    message: dict[str, Any] = {"type": "subscribe", "topics": topics}
    if since:
        message["since"] = since
    ws.send(json.dumps(message))
    answer = json.loads(ws.receive(timeout=10) or "{}")
    if answer.get("type") != "subscribed":
        ws.close()
        raise ConnectionError(f"not subscribed: {answer}")
    return ws
