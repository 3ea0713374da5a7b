"""The failover drill: the whole HA topology under load, and one part of it SIGKILLed at a time.

Real processes only: a Redis primary and replica with three sentinels (``down-after-milliseconds`` 2000),
HAProxy with deploy/haproxy.cfg in front of two API instances, two prefork workers, beat (for its sweep of
lost sync messages), the audit writer, the Tebra simulator. A steady load goes through the balancer over
TLS: sync requests for new days, PATCHes moving patients along the flow, and a socket on the patients' topic
that reconnects with ``since`` whenever it is dropped. Then, one at a time:

1. the Redis primary is SIGKILLed (and started again once the sentinels promoted the replica, as its
   supervisor would: it comes back as the new replica). ``FAILOVER_DRILLS`` repeats it (default 1; the
   figures in docs/reliability.md are from 5);
2. the API instance holding the socket is SIGKILLed;
3. a whole worker (parent and pool) is SIGKILLed.

Counted each time, all asserted to be 0: accepted syncs (202) that never completed, acknowledged status
changes (200) not in Redis afterwards, acknowledged changes whose event the socket never received (after
its replays). Reported, not asserted (no timed assertions): the window from the first failed answer to the
first 2xx after it, its p50/p95 over the Redis drills.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import simple_websocket

from bench.common import percentiles
from config import load_settings
from tasks import connections, keys
from tasks.patients import flow
from tests.support.balancer import Balancer, sockets_on, start_api, start_balancer, subscribe
from tests.support.patients import seed_day
from tests.support.processes import BIN, free_port, spawn, start_beat, start_worker, stop, wait_until
from tests.support.redis_ha import SentinelGroup

# One worker runs the whole file (tests/conftest.py): the HA stack starts once for the three drills. They
# run alone: a killed worker or primary must lose nothing, and while other tests load the 2 cores the
# failovers and redeliveries they wait for can outlast the drills' deadlines (a clean parallel run lost
# one sync that way).
pytestmark = [
    pytest.mark.slow(seconds=12),
    pytest.mark.alone,
    pytest.mark.skipif(
        shutil.which("haproxy") is None,
        reason="haproxy is not installed (apt-get install haproxy; .ci/run does)",
    ),
]

DRILLS = int(os.environ.get("FAILOVER_DRILLS", "1"))
PATIENTS = 60  # per drill, each moved twice (scheduled -> confirmed -> arrived)
DRILL_ENV = {
    "TASK_SOFT_TIME_LIMIT_S": "8",
    "TASK_TIME_LIMIT_S": "10",
    "RETRY_BACKOFF_MAX_S": "2",
    "BROKER_VISIBILITY_TIMEOUT_S": "15",  # a killed worker's reserved message runs again after this
    "PATIENT_DETAILS_ENABLED": "false",
    "SYNC_COALESCE_DAYS": "1",
    "REDIS_SOCKET_TIMEOUT_S": "2",
    "REDIS_CONNECT_TIMEOUT_S": "1",
    "REDIS_WAIT_REPLICA_MS": "1000",
    "TRUSTED_PROXIES": "1",
    "TEBRA_POLL_INTERVAL_S": "0",
    # Beat runs only the sweep, and often: a sync whose message a failover lost is sent again within seconds.
    "SYNC_SWEEP_INTERVAL_S": "3",
}
# Days ahead of today: the patients' days (one a drill, never synced: a sync would reconcile them away) and
# the days the syncs ask for, reused in turn (a day synced again is a new sync of it, as good as a new day).
_patient_days = iter(range(1, 20))
_sync_days = itertools.cycle(range(20, 366))
WINDOWS: list[float] = []


def day_ahead(days: int) -> str:
    return (datetime.now(UTC).date() + timedelta(days=days)).isoformat()


@dataclass
class Stack:
    group: SentinelGroup
    env: dict[str, str]
    folder: Path
    balancer: Balancer
    apis: dict[str, tuple[subprocess.Popen[bytes], int]]
    workers: list[subprocess.Popen[bytes]]
    others: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def data(self) -> redis.Redis:
        return connections.make_redis(load_settings(self.env))


@pytest.fixture(scope="module")
def stack(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("drill")
    (folder / "redis").mkdir()
    group = SentinelGroup(folder / "redis")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        group.start()
        env = {
            **stack_env,
            **DRILL_ENV,
            "REDIS_URL": "redis://127.0.0.1:1/0",  # the sentinels give the host
            "CELERY_BROKER_URL": "redis://127.0.0.1:1/1",
            "CELERY_RESULT_BACKEND": "redis://127.0.0.1:1/1",
            "REDIS_SENTINELS": group.sentinels,
            "AUDIT_LOG_PATH": str(folder / "audit.jsonl"),
        }
        workers = [
            start_worker(
                {**env, "WORKER_METRICS_PORT": str(free_port())}, folder / f"worker{n}.log", name=f"drill{n}"
            )
            for n in (1, 2)
        ]
        procs.extend(workers)
        procs.append(spawn([str(BIN / "python"), "-m", "workers.audit", "run"], env, folder / "audit.log"))
        procs.append(start_beat(env, folder / "beat.log", folder / "beat-schedule"))
        apis = {name: start_api(env, folder / f"{name}.log") for name in ("api1", "api2")}
        procs.extend(proc for proc, _ in apis.values())
        balancer = start_balancer([port for _, port in apis.values()], folder)
        procs.append(balancer.proc)
        yield Stack(group, env, folder, balancer, apis, workers)
    finally:
        for proc in reversed(procs):
            stop(proc)
        group.stop()


class Load:
    """Syncs, PATCHes and one socket through the balancer, until stopped; what each got is kept."""

    def __init__(self, stack: Stack, token: str) -> None:
        self.stack = stack
        self.headers = {"Authorization": f"Bearer {token}"}
        self.token = token
        self.date = day_ahead(next(_patient_days))
        self.hpids = seed_day(stack.data(), load_settings(stack.env), self.date, [flow.SCHEDULED] * PATIENTS)
        self.answers: list[tuple[float, int]] = []  # (answered at, status), PATCHes and syncs
        self.accepted: dict[str, str] = {}  # sync day -> the task id of its 202
        self.kept: dict[str, tuple[int, str]] = {}  # hpid -> (version, event id) of its last 200
        self.received: list[str] = []  # event ids the socket got, in order
        self.reconnects = 0
        self.subscribed = threading.Event()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=t, daemon=True) for t in (self._syncs, self._patches, self._socket)
        ]

    def __enter__(self) -> Load:
        socket_thread, *senders = reversed(self.threads)
        socket_thread.start()  # subscribed before the first change: it is owed every event from then on
        assert self.subscribed.wait(30), "the socket never subscribed"
        for thread in senders:
            thread.start()
        wait_until(lambda: len(self.kept) >= 10 and len(self.accepted) >= 5, 60, "load under way")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)

    def _send(
        self, session: requests.Session, method: str, path: str, body: Any = None
    ) -> requests.Response | None:
        try:
            response = session.request(
                method,
                self.stack.balancer.url + path,
                json=body,
                headers=self.headers,
                timeout=10,
                verify=str(self.stack.balancer.ca),
            )
        except requests.RequestException:
            response = None
        with self.lock:
            self.answers.append((time.monotonic(), 0 if response is None else response.status_code))
        return response

    def _syncs(self) -> None:
        session = requests.Session()
        day = day_ahead(next(_sync_days))
        while not self.stopping.is_set():
            response = self._send(session, "POST", f"/api/v1/schedule/sync?date={day}")
            if response is not None and response.status_code == 202:
                self.accepted[day] = response.json()["data"]["task_id"]
                day = day_ahead(next(_sync_days))
            self.stopping.wait(0.25)

    def _patches(self) -> None:
        session = requests.Session()
        steps = [(status, hpid) for status in (flow.CONFIRMED, flow.ARRIVED) for hpid in self.hpids]
        while steps and not self.stopping.is_set():
            status, hpid = steps[0]
            path = f"/api/v1/patients/{hpid}/status?date={self.date}"
            response = self._send(session, "PATCH", path, {"status": status})
            if response is not None and response.status_code == 200:
                data = response.json()["data"]
                self.kept[hpid] = (data["version"], data["event_id"])
                steps.pop(0)
            elif response is not None and response.status_code == 409:
                steps.pop(0)  # an earlier 503'd attempt was kept after all: nothing acknowledged to check
            self.stopping.wait(0.1)

    def _socket(self) -> None:
        ws: simple_websocket.Client | None = None
        since: str | None = None
        while not self.stopping.is_set():
            try:
                if ws is None:
                    ws = subscribe(self.stack.balancer, self.token, [f"patients:{self.date}"], since=since)
                    self.subscribed.set()
                text = ws.receive(timeout=0.5)
            except Exception:  # closed, refused, reset: reconnect through the balancer with since
                ws = None
                self.reconnects += 1
                self.stopping.wait(0.2)
                continue
            if text:
                event = json.loads(text)
                if "id" in event:
                    self.received.append(event["id"])
                    since = event["id"]
        if ws is not None:
            ws.close()

    def first_failure_after(self, moment: float) -> float | None:
        return min(
            (at for at, status in self.answers if at >= moment and status not in (200, 202)), default=None
        )

    def recovered_after(self, moment: float) -> bool:
        """A 2xx answered after the first failure that followed ``moment``."""
        failed = self.first_failure_after(moment)
        return failed is not None and any(at > failed and status in (200, 202) for at, status in self.answers)

    def window_s(self, moment: float) -> float | None:
        failed = self.first_failure_after(moment)
        if failed is None:
            return None
        back = min((at for at, status in self.answers if at > failed and status in (200, 202)), default=None)
        return None if back is None else round(back - failed, 2)


def count_losses(stack: Stack, load: Load) -> dict[str, Any]:
    """What the drill lost: every figure must be 0."""
    data = stack.data()

    def synced(task_id: str) -> int:
        return sum(
            1
            for _, f in data.xrange(keys.AGENT_UPDATES)
            if f["action"] == "schedule_synced" and json.loads(f["payload"]).get("task_id") == task_id
        )

    # Every accepted sync completes (a message of a killed worker waits out the visibility timeout).
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: all(synced(t) >= 1 for t in load.accepted.values()), 90, "accepted syncs done")
    runs = {day: synced(task_id) for day, task_id in load.accepted.items()}
    changes_lost = [
        hpid
        for hpid, (version, _) in load.kept.items()
        if int(data.hget(keys.patient(hpid, load.date), "version") or 0) < version
    ]
    kept_events = {event_id for _, event_id in load.kept.values()}
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: kept_events <= set(load.received), 30, "the socket caught up")
    return {
        "syncs_accepted": len(runs),
        "syncs_lost": sorted(day for day, n in runs.items() if n == 0),
        "syncs_announced_twice": sorted(day for day, n in runs.items() if n > 1),
        "changes_acknowledged": len(load.kept),
        "changes_lost": changes_lost,
        "events_missed": sorted(kept_events - set(load.received)),
        "events_duplicated": len(load.received) - len(set(load.received)),
        "socket_reconnects": load.reconnects,
    }


def assert_nothing_lost(losses: dict[str, Any]) -> None:
    assert losses["syncs_lost"] == [], losses
    assert losses["syncs_announced_twice"] == [], losses
    assert losses["changes_lost"] == [], losses
    assert losses["events_missed"] == [], losses
    assert losses["events_duplicated"] == 0, losses


@pytest.mark.parametrize("drill", range(1, DRILLS + 1))
def test_the_redis_primary_killed_under_load_loses_nothing_acknowledged(
    stack: Stack, make_token: Any, drill: int
) -> None:
    with Load(stack, make_token()) as load:
        killed_at = time.monotonic()
        old = stack.group.kill_primary()
        new = stack.group.wait_failover(old)
        promoted_s = time.monotonic() - killed_at
        stack.group.restart(old)  # back as the new primary's replica: WAIT 1 has a replica again
        stack.group.wait_replica_linked()
        wait_until(lambda: load.recovered_after(killed_at), 60, "a 2xx after the failover")
        settled = len(load.kept)
        wait_until(lambda: len(load.kept) >= min(settled + 10, 2 * PATIENTS), 60, "load after recovery")
    losses = count_losses(stack, load)
    window = load.window_s(killed_at)
    if window is not None:
        WINDOWS.append(window)
    print(
        f"\nredis drill {drill}: primary {old} -> {new} promoted after {promoted_s:.1f}s;"
        f" window first failure -> first 2xx {window}s; {losses}"
    )
    if drill == DRILLS and WINDOWS:
        print(f"window over {len(WINDOWS)} drills (s): {percentiles(WINDOWS)}")
    assert_nothing_lost(losses)


def test_an_api_instance_killed_under_load_loses_nothing(stack: Stack, make_token: Any) -> None:
    with Load(stack, make_token()) as load:
        holder = next((name for name, (_, port) in stack.apis.items() if sockets_on(port) >= 1), "api1")
        reconnects = load.reconnects
        killed_at = time.monotonic()
        stop(stack.apis[holder][0], signal.SIGKILL)
        wait_until(lambda: load.reconnects > reconnects, 30, "the socket reconnected")
        settled = len(load.kept)
        wait_until(lambda: len(load.kept) >= min(settled + 10, 2 * PATIENTS), 60, "load after the kill")
    losses = count_losses(stack, load)
    print(f"\napi drill: {holder} killed; window {load.window_s(killed_at)}s; {losses}")
    assert losses["socket_reconnects"] >= 1
    assert_nothing_lost(losses)


def test_a_worker_killed_under_load_loses_no_accepted_sync(stack: Stack, make_token: Any) -> None:
    with Load(stack, make_token()) as load:
        accepted = len(load.accepted)
        stop(stack.workers[0], signal.SIGKILL)  # the whole worker: parent and pool, as a host dying
        wait_until(lambda: len(load.accepted) >= accepted + 5, 60, "syncs accepted after the kill")
    losses = count_losses(stack, load)
    print(f"\nworker drill: one of two workers killed; {losses}")
    assert_nothing_lost(losses)
