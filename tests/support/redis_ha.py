"""A real Redis primary, one replica and three sentinels on free ports, for the high-availability tests.

Every process is a real ``redis-server`` (the sentinels are ``redis-server CONF --sentinel``, each with its
own config file, which a sentinel rewrites). The sentinels watch the primary as ``relay`` and call it down
after ``down_after_ms`` without a reply; two of three must agree.
"""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from scripts import redis_server
from tests.support.processes import free_port, wait_until
from tests.support.tls import Pair

MASTER = "relay"


@dataclass
class SentinelGroup:
    folder: Path
    down_after_ms: int = 2000
    primary_port: int = 0
    replica_port: int = 0
    sentinel_ports: list[int] = field(default_factory=list)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    # TLS everywhere when given: every server and sentinel listens on TLS only (this certificate, signed by
    # ``tls_ca``), replication and the sentinels' own links are TLS too.
    tls: Pair | None = None
    tls_ca: Path | None = None

    def client(self, port: int, **options: object) -> redis.Redis:
        """A client of one server or sentinel of the group (TLS when the group is)."""
        if self.tls is not None:
            options.update(ssl=True, ssl_ca_certs=str(self.tls_ca))
        return redis.Redis(port=port, socket_timeout=2, **options)  # type: ignore[arg-type]

    def _tls_args(self, port: int) -> list[str]:
        if self.tls is None:
            return ["--port", str(port)]
        return [
            *("--port", "0", "--tls-port", str(port), "--tls-replication", "yes"),
            *("--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)),
            *("--tls-ca-cert-file", str(self.tls_ca), "--tls-auth-clients", "no"),
        ]

    @property
    def sentinels(self) -> str:
        """The REDIS_SENTINELS setting for this group."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> SentinelGroup:
        self.primary_port, self.replica_port = free_port(), free_port()
        self._server(self.primary_port)
        self._server(self.replica_port, "--replicaof", "127.0.0.1", str(self.primary_port))
        replica = self.client(self.replica_port)
        wait_until(lambda: replica.info("replication")["master_link_status"] == "up", 20, "replica link")
        for _ in range(3):
            port = free_port()
            self.sentinel_ports.append(port)
            conf = self.folder / f"sentinel-{port}.conf"
            args = self._tls_args(port)  # the same directives a server gets, as config lines
            listen = "".join(f"{args[i].lstrip('-')} {args[i + 1]}\n" for i in range(0, len(args), 2))
            conf.write_text(
                f"{listen}bind 127.0.0.1\ndir {self.folder}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}\n"
                f"sentinel failover-timeout {MASTER} 10000\n"
            )
            self._spawn(port, [str(conf), "--sentinel"])
        for port in self.sentinel_ports:  # every sentinel knows the replica and the other sentinels
            sentinel = self.client(port, decode_responses=True)
            wait_until(lambda s=sentinel: self._sees_everyone(s), 30, f"sentinel {port}")
        return self

    @staticmethod
    def _sees_everyone(sentinel: redis.Redis) -> bool:
        master = sentinel.sentinel_master(MASTER)
        return int(master["num-slaves"]) >= 1 and int(master["num-other-sentinels"]) >= 2

    def _server(self, port: int, *extra: str) -> None:
        data = self.folder / f"data-{port}"
        data.mkdir(exist_ok=True)
        args = [*self._tls_args(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "", *extra]
        self._spawn(port, args)
        wait_until(lambda: self.client(port).ping(), 10, f"redis {port}")

    def _spawn(self, port: int, args: list[str]) -> None:
        log = (self.folder / f"{port}.log").open("ab")
        self.procs[port] = subprocess.Popen(
            [redis_server.server_binary(), *args], stdout=log, stderr=subprocess.STDOUT
        )

    def primary(self) -> int:
        """The primary's port as the first sentinel that answers says it is."""
        for port in self.sentinel_ports:
            try:
                found = self.client(port).sentinel_get_master_addr_by_name(MASTER)
            except redis.RedisError:
                continue
            if found:
                return int(found[1])
        raise LookupError("no sentinel answers")

    def kill_primary(self) -> int:
        """SIGKILL the primary (no shutdown, no last sync); returns the port it had."""
        port = self.primary()
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        return port

    def wait_failover(self, old: int, timeout_s: float = 60) -> int:
        """Wait until the sentinels name another primary and it answers as one; returns its port."""

        def promoted() -> bool:
            port = self.primary()
            role = self.client(port).info("replication")["role"]
            return port != old and role == "master"

        wait_until(promoted, timeout_s, "failover")
        return self.primary()

    def restart(self, port: int) -> None:
        """Start a killed server again on its port once the failover is done, as a careful supervisor does:
        it asks the sentinels for the primary first and starts as its replica (docs/operations.md).

        Started as a primary instead, it would wait for the sentinels to notice and convert it (their
        INFO period is 10 s), and until then ``WAIT 1`` has no replica.
        """
        self._server(port, "--replicaof", "127.0.0.1", str(self.primary()))

    def wait_replica_linked(self, timeout_s: float = 60) -> None:
        """Wait until the primary has a replica with its link up (what ``WAIT 1`` needs)."""

        def linked() -> bool:
            info = self.client(self.primary()).info("replication")
            return any(
                isinstance(value, dict) and value.get("state") == "online"
                for key, value in info.items()
                if key.startswith("slave")
            )

        wait_until(linked, timeout_s, "a replica linked to the primary")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def redis_probes_ok(app: Any) -> bool:
    """Whether /ready of the in-process Flask ``app`` found its data Redis and its broker (not the worker)."""
    checks = {check["name"]: check for check in app.test_client().get("/ready").get_json()["checks"]}
    return bool(checks["redis"]["ok"] and checks["broker"]["ok"])
