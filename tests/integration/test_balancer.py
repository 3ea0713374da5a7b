"""Two API instances behind HAProxy with deploy/haproxy.cfg: one TLS 1.3 address, WebSockets, /ready checks.

Real processes: HAProxy from Debian with the shipped configuration (a certificate this test makes), two
gunicorn API instances on the test Redis, a prefork worker and the audit writer (so /ready, the balancer's
health check, is green). A socket opened through the balancer receives the event a PATCH on the *other*
instance caused; SIGKILL of the socket's instance closes it, a PATCH through the balancer still succeeds
(the dead instance is skipped), and the socket reconnecting through the balancer with ``since`` gets what it
missed. TLS below 1.3 is refused at the balancer; the API's HSTS header comes through.

HAProxy is an apt package: .ci/run installs it; where it is missing the test is skipped, saying so.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import requests
import simple_websocket

from config import load_settings
from tasks.patients import flow
from tests.support.balancer import Balancer, sockets_on, start_api, start_balancer, subscribe
from tests.support.patients import seed_day
from tests.support.processes import BIN, spawn, start_worker, stop

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="haproxy is not installed (apt-get install haproxy; .ci/run does)"
)

DATE = (datetime.now(UTC).date() + timedelta(days=11)).isoformat()


@dataclass
class Balanced:
    balancer: Balancer
    apis: dict[str, tuple[subprocess.Popen[bytes], int]]  # server name -> (gunicorn, port)

    @property
    def url(self) -> str:
        return self.balancer.url

    @property
    def ca(self) -> str:
        return str(self.balancer.ca)


@pytest.fixture(scope="module")
def balanced(base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Balanced]:
    folder = tmp_path_factory.mktemp("balancer")
    env = {**base_env, "TRUSTED_PROXIES": "1", "AUDIT_LOG_PATH": str(folder / "audit.jsonl")}
    redis.Redis.from_url(base_env["REDIS_URL"]).flushdb()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # Liveness for /ready: a worker on a queue of its own (it takes no other test's tasks), the writer.
        procs.append(
            start_worker(env, folder / "worker.log", name="lb-worker", concurrency=1, queues="lb-idle")
        )
        procs.append(spawn([str(BIN / "python"), "-m", "workers.audit", "run"], env, folder / "audit.log"))
        apis = {name: start_api(env, folder / f"{name}.log") for name in ("api1", "api2")}
        procs.extend(proc for proc, _ in apis.values())
        balancer = start_balancer([port for _, port in apis.values()], folder)
        procs.append(balancer.proc)
        yield Balanced(balancer, apis)
    finally:
        for proc in reversed(procs):
            stop(proc)


def next_event(ws: simple_websocket.Client) -> dict[str, Any]:
    text = ws.receive(timeout=10)
    assert text is not None, "no event within 10 s"
    event: dict[str, Any] = json.loads(text)
    return event


def patch(base: str, hpid: str, status: str, headers: dict[str, str], verify: Any = True) -> Any:
    response = requests.patch(
        f"{base}/api/v1/patients/{hpid}/status?date={DATE}",
        json={"status": status},
        headers=headers,
        timeout=10,
        verify=verify,
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_tls_13_only_and_hsts_kept(balanced: Balanced) -> None:
    answer = requests.get(f"{balanced.url}/health", verify=balanced.ca, timeout=5)
    assert answer.ok and answer.headers["Strict-Transport-Security"].startswith("max-age=")
    old = ssl.create_default_context(cafile=balanced.ca)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    host, port = balanced.url.removeprefix("https://").split(":")
    with (
        pytest.raises(ssl.SSLError),
        old.wrap_socket(socket.create_connection((host, int(port)), timeout=5), server_hostname=host),
    ):
        pass


def test_a_socket_follows_patches_on_the_other_instance_and_survives_its_own_instance_dying(
    balanced: Balanced, base_env: dict[str, str], make_token: Any, auth_headers: dict[str, str]
) -> None:
    data = redis.Redis.from_url(base_env["REDIS_URL"], decode_responses=True)
    hpids = seed_day(data, load_settings(base_env), DATE, [flow.SCHEDULED] * 2, prefix="lb")
    token = make_token()
    ws = subscribe(balanced.balancer, token, [f"patients:{DATE}"])
    here = next(name for name, (_, port) in balanced.apis.items() if sockets_on(port) >= 1)
    other = next(name for name in balanced.apis if name != here)

    # A PATCH on the other instance reaches this socket (through Redis pub/sub, not the balancer).
    first = patch(f"http://127.0.0.1:{balanced.apis[other][1]}", hpids[0], flow.CONFIRMED, auth_headers)
    event = next_event(ws)
    assert (event["id"], event["data"]["hpid"]) == (first["event_id"], hpids[0])

    stop(balanced.apis[here][0], signal.SIGKILL)  # the socket's instance dies
    with pytest.raises(simple_websocket.ConnectionClosed):
        while True:
            ws.receive(timeout=10)
    # Meanwhile a change goes through the balancer (to the live instance) while the socket is away.
    missed = patch(balanced.url, hpids[1], flow.CONFIRMED, auth_headers, verify=balanced.ca)

    again = subscribe(
        balanced.balancer, token, [f"patients:{DATE}"], since=event["id"]
    )  # the reconnect: through the balancer, with since
    replayed = next_event(again)
    assert (replayed["id"], replayed["data"]["hpid"]) == (missed["event_id"], hpids[1])
    again.close()
