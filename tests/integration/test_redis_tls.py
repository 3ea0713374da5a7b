"""Redis over TLS with an ACL user: every kind of client verifies the server and authenticates.

A real redis-server listens on TLS only (no plain port), with certificates this test makes (its own CA, a
server certificate for 127.0.0.1, a client certificate: ``tls-auth-clients yes``), the default user off and
one ACL user ``relay``. The data client (with a Lua script), /ready's probes and a real prefork Celery worker
(kombu's broker and Celery's result backend over ``rediss://``) all work; a wrong CA, a missing client
certificate and a wrong password are each refused with a clear error, and nothing is written.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from app import create_app
from config import load_settings
from scripts import redis_server
from tasks import connections, events, names
from tasks.celery_factory import create_celery
from tasks.clients import Clients
from tests.support.processes import free_port, start_worker, stop, wait_until
from tests.support.redis_ha import SentinelGroup, redis_probes_ok
from tests.support.tls import Authority, Pair

PASSWORD = "relay-tls-test-password"  # a throwaway server's


@dataclass
class TlsRedis:
    port: int
    ca: Pair
    client: Pair
    other_ca: Pair  # a CA that did not sign the server's certificate

    def env(self, db: int = 0, **extra: str) -> dict[str, str]:
        url = f"rediss://relay:{PASSWORD}@127.0.0.1:{self.port}/{db}"
        return {
            "APP_ENV": "test",
            "REDIS_URL": url,
            "CELERY_BROKER_URL": url.replace(f"/{db}", "/1"),
            "CELERY_RESULT_BACKEND": url.replace(f"/{db}", "/1"),
            "REDIS_TLS_CA_FILE": str(self.ca.cert),
            "REDIS_TLS_CERT_FILE": str(self.client.cert),
            "REDIS_TLS_KEY_FILE": str(self.client.key),
            "REDIS_SOCKET_TIMEOUT_S": "2",
            "REDIS_CONNECT_TIMEOUT_S": "1",
            "PATIENT_DETAILS_ENABLED": "false",
            "TEBRA_POLL_INTERVAL_S": "0",
            **extra,
        }


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    folder = tmp_path_factory.mktemp("redis-tls")
    authority = Authority(folder)
    server = authority.issue("server")
    found = TlsRedis(
        free_port(), authority.ca, authority.issue("client", client=True), Authority(folder, "Other CA").ca
    )
    log = folder / "redis.log"
    args = [
        *("--port", "0", "--tls-port", str(found.port), "--bind", "127.0.0.1", "--save", ""),
        *("--dir", str(folder), "--tls-auth-clients", "yes"),
        *("--tls-cert-file", str(server.cert), "--tls-key-file", str(server.key)),
        *("--tls-ca-cert-file", str(authority.ca.cert)),
        *("--user", "default", "off", "--user", "relay", "on", f">{PASSWORD}", "~*", "&*", "+@all"),
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen([redis_server.server_binary(), *args], stdout=out, stderr=subprocess.STDOUT)
    try:
        settings = load_settings(found.env())
        wait_until(lambda: connections.make_redis(settings).ping(), 10, "redis over TLS", proc, log)
        yield found
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.alone  # /ready gives each probe 50 ms, a TLS handshake included: measured on quiet cores
def test_data_client_ready_probes_and_a_worker_speak_tls_as_an_acl_user(
    tls_redis: TlsRedis, dev_key_path: str, tmp_path: Path
) -> None:
    env = tls_redis.env(AUTH_MODE="dev", DEV_KEY_PATH=dev_key_path)
    settings = load_settings(env)
    data = connections.make_redis(settings)
    assert data.acl_whoami() == "relay"
    published = Clients(settings).publisher.publish(
        events.SCHEDULE_SYNCED, {"date": "2026-03-04", "count": 0}
    )
    assert data.xrange("agent_updates")[-1][0] == published["id"]  # a Lua script over TLS
    checks = {
        check["name"]: check
        for check in create_app(settings).test_client().get("/ready").get_json()["checks"]
    }
    assert checks["redis"]["ok"] and checks["broker"]["ok"], checks
    worker = start_worker(env, tmp_path / "worker.log", name="tls-worker", concurrency=1)
    celery = create_celery(settings)
    try:
        assert celery.send_task(names.NOOP, args=[7]).get(timeout=30) == 7
    finally:
        celery.close()
        stop(worker)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ("other_ca", redis.ConnectionError),  # the server's certificate is not signed by the CA we trust
        ("no_client_cert", redis.ConnectionError),  # the server asks for a client certificate
        ("wrong_password", redis.AuthenticationError),
    ],
)
def test_a_bad_certificate_or_password_is_refused_and_nothing_is_written(
    tls_redis: TlsRedis, change: str, error: type[Exception]
) -> None:
    env = tls_redis.env(db=5)
    if change == "other_ca":
        env["REDIS_TLS_CA_FILE"] = str(tls_redis.other_ca.cert)
    elif change == "no_client_cert":
        env["REDIS_TLS_CERT_FILE"] = env["REDIS_TLS_KEY_FILE"] = ""
    else:
        env["REDIS_URL"] = env["REDIS_URL"].replace(PASSWORD, "not-the-password")
    with pytest.raises(error):
        connections.make_redis(load_settings(env)).set("written", "1")
    assert connections.make_redis(load_settings(tls_redis.env(db=5))).exists("written") == 0


@pytest.fixture(scope="module")
def tls_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """A primary, a replica and three sentinels, every one of them on TLS only (replication included)."""
    folder = tmp_path_factory.mktemp("sentinels-tls")
    authority = Authority(folder)
    group = SentinelGroup(folder, tls=authority.issue("redis"), tls_ca=authority.ca.cert)
    try:
        yield group.start()
    finally:
        group.stop()


def test_sentinels_over_tls_lead_every_client_to_the_primary(
    tls_group: SentinelGroup, dev_key_path: str, tmp_path: Path
) -> None:
    env = {
        "APP_ENV": "test",
        "REDIS_URL": "rediss://127.0.0.1:1/3",  # the sentinels give the host; rediss://: TLS to both
        "CELERY_BROKER_URL": "rediss://127.0.0.1:1/4",
        "CELERY_RESULT_BACKEND": "rediss://127.0.0.1:1/4",
        "REDIS_SENTINELS": tls_group.sentinels,
        "REDIS_TLS_CA_FILE": str(tls_group.tls_ca),
        "REDIS_SOCKET_TIMEOUT_S": "2",
        "REDIS_CONNECT_TIMEOUT_S": "1",
        "AUTH_MODE": "dev",
        "DEV_KEY_PATH": dev_key_path,
        "PATIENT_DETAILS_ENABLED": "false",
        "TEBRA_POLL_INTERVAL_S": "0",
    }
    settings = load_settings(env)
    published = Clients(settings).publisher.publish(events.SCHEDULE_SYNCED, {"date": "2026-03-04"})
    primary = tls_group.client(tls_group.primary(), db=3, decode_responses=True)
    assert primary.xrange("agent_updates")[-1][0] == published["id"]
    # /ready's 50 ms connect budget may not cover a first TLS handshake with a sentinel and then with the
    # primary on a busy machine: its next probes reuse the connections.
    app = create_app(settings)
    wait_until(lambda: redis_probes_ok(app), 10, "ready probes over TLS through the sentinels")
    worker = start_worker(env, tmp_path / "worker.log", name="tls-sentinel-worker", concurrency=1)
    celery = create_celery(settings)
    try:
        assert celery.send_task(names.NOOP, args=[11]).get(timeout=30) == 11
    finally:
        celery.close()
        stop(worker)
