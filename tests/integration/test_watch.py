"""The board follows Tebra by itself: real beat, a real prefork worker, the simulator over HTTP, the API
and a real WebSocket client. Nobody asks for a sync in these tests: every change reaches the board through
the watch.

The watch's worker and beat use their own broker database, so the session's worker never sees a watch tick
and these settings (a 5 s poll, a full read every minute) stay out of the other suites.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from websockets.sync.client import connect

from tasks import keys, names, phi
from tasks.breaker.store import BreakerStore
from tasks.celery_factory import SYNC_QUEUE
from tests.conftest import TEST_BROKER_URL
from tests.integration.tebra_flow import weekday_ahead, ws_url
from tests.support.processes import free_port, start_beat, start_worker, stop, wait_until

WATCH_BROKER_URL = TEST_BROKER_URL.rsplit("/", 1)[0] + "/12"
POLL_S = 5  # the shortest TEBRA_POLL_INTERVAL_S the settings accept

# Each test waits out several polls: under xdist each is a unit of its own (tests/conftest.py).
pytestmark = pytest.mark.slow(seconds=30)


@pytest.fixture(scope="module")
def watch_env(stack_env: dict[str, str]) -> dict[str, str]:
    """The stack's environment with a fast watch, on its own broker database."""
    return {
        **stack_env,
        "CELERY_BROKER_URL": WATCH_BROKER_URL,
        "CELERY_RESULT_BACKEND": WATCH_BROKER_URL,
        "TEBRA_POLL_INTERVAL_S": str(POLL_S),
        "TEBRA_POLL_INTERVAL_OFF_HOURS_S": str(POLL_S),  # any hour of the day: the test must not depend on it
        "FULL_RECONCILE_MINUTES": "1",
        "SYNC_SWEEP_INTERVAL_S": "0",  # beat here is the watch's: the sweep has its own tests
        "WORKER_METRICS_PORT": str(free_port()),
    }


@pytest.fixture(scope="module")
def watch_worker(watch_env: dict[str, str], logs_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A prefork worker on the watch's broker."""
    redis.Redis.from_url(WATCH_BROKER_URL).flushdb()
    proc = start_worker(watch_env, logs_dir / "watch-worker.log", name="watch-worker", concurrency=2)
    yield proc
    stop(proc)


@pytest.fixture
def beat(
    watch_env: dict[str, str],
    watch_worker: Any,
    redis_client: redis.Redis,
    sim: Any,
    logs_dir: Path,
    tmp_path: Path,
) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Starts beat processes (each its own schedule file); all stopped after the test, and the watch left
    with no tick queued or running before the next test flushes Redis."""
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str = "beat") -> subprocess.Popen[bytes]:
        proc = start_beat(watch_env, logs_dir / f"{name}.log", tmp_path / f"{name}-schedule")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop(proc)
    # No tick may run after the next test flushed Redis: wait until none is queued or running and the last
    # poll let go of its lease. (A queued tick would also expire POLL_S after beat sent it, as the ticks'
    # ``expires`` says, but waiting that long every time is what this wait saves.)
    broker = redis.Redis.from_url(WATCH_BROKER_URL, socket_timeout=5)
    try:
        wait_until(lambda: watch_idle(broker, redis_client), 30, "the watch idle after its beats stopped")
    finally:
        broker.close()


def watch_idle(broker: redis.Redis, data: redis.Redis) -> bool:
    """No tick in the watch's queue or unacked by its worker (acks are late: a running tick is unacked until
    it ends), no poll holding the lease; seen twice 0.1 s apart (a message is out of the queue and not yet
    in the unacked set for an instant)."""
    for look in range(2):
        if look:
            time.sleep(0.1)
        queued = sum(broker.llen(name) for name in broker.scan_iter(f"{SYNC_QUEUE}*", _type="list"))
        if queued or broker.hlen("unacked") or data.exists(keys.WATCH_LEASE):
            return False
    return True


def hpid_of(settings: Any, patient_id: Any) -> str:
    return phi.hpid(str(patient_id), settings.phi_hmac_key)


def wait_first_full_poll(client: redis.Redis, timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.hget(keys.WATCH_STATE, "last_full_started_at"):
            return
        time.sleep(0.2)
    raise AssertionError("the watch never read the horizon in full")


def board(api: str, date: str, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    response = requests.get(f"{api}/api/v1/patients", params={"date": date}, headers=headers, timeout=5)
    assert response.ok, response.text
    return {row["hpid"]: row for row in response.json()["data"]}


def single_visits(rows: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """``count`` appointments of patients with no other appointment that day, not yet under way."""
    per_patient: dict[Any, int] = {}
    for row in rows:
        per_patient[row["patient_id"]] = per_patient.get(row["patient_id"], 0) + 1
    found = [
        row
        for row in rows
        if per_patient[row["patient_id"]] == 1 and row["status"] in {"Scheduled", "Confirmed"}
    ]
    assert len(found) >= count, "the simulator books enough single visits a day"
    return found[:count]


class Socket:
    """A WebSocket subscribed to some topics, collecting every event it receives."""

    def __init__(self, ws: Any, topics: list[str]) -> None:
        self._ws = ws
        self._ws.send(json.dumps({"type": "subscribe", "topics": topics}))
        self.events: list[dict[str, Any]] = []
        while json.loads(self._ws.recv(timeout=5)).get("type") != "subscribed":
            pass

    def until(self, done: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.events):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what} not on the socket within {timeout}s: {self.types()}")
            self._collect(min(left, 1.0))

    def drain(self, seconds: float) -> None:
        """Keep collecting for ``seconds`` (what arrives after a condition was met counts too)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._collect(min(left, 1.0))

    def _collect(self, timeout: float) -> None:
        try:
            message = json.loads(self._ws.recv(timeout=timeout))
        except TimeoutError:
            return
        if message.get("type") not in {"subscribed", "pong"}:
            self.events.append(message)

    def of(self, event_type: str, **data: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["type"] == event_type and all(e["data"].get(k) == v for k, v in data.items())
        ]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


@contextmanager
def listening(api: str, headers: dict[str, str], topics: list[str]) -> Iterator[Socket]:
    """A :class:`Socket` on the API, subscribed to ``topics``, closed after."""
    with connect(ws_url(api), open_timeout=5, additional_headers=headers) as ws:
        yield Socket(ws, topics)


def test_bookings_moves_cancellations_and_deletions_reach_the_board_by_themselves(
    beat: Any, api_server: str, sim: Any, redis_client: redis.Redis, settings: Any, auth_headers: Any
) -> None:
    day, other = weekday_ahead(1), weekday_ahead(2)
    beat()
    wait_first_full_poll(redis_client)
    rows = sim.appointments(day)
    moving, cancelled, deleted = single_visits(rows, 3)
    booked_on_other = {r["patient_id"] for r in sim.appointments(other)}
    newcomer = next(r for r in sim.appointments(weekday_ahead(3)) if r["patient_id"] not in booked_on_other)
    topics = [f"schedule:{day}", f"patients:{day}", f"schedule:{other}", f"patients:{other}"]
    with listening(api_server, auth_headers, topics) as socket:
        sim.edit_appointment("reschedule", id=moving["id"], start=f"{other}T16:30:00")
        sim.edit_appointment("cancel", id=cancelled["id"])
        sim.edit_appointment("delete", id=deleted["id"])
        added = sim.edit_appointment("add", patient_id=newcomer["patient_id"], start=f"{other}T17:00:00")
        moving_hpid, cancelled_hpid, deleted_hpid, new_hpid = (
            hpid_of(settings, pid)
            for pid in (
                moving["patient_id"],
                cancelled["patient_id"],
                deleted["patient_id"],
                added["patient_id"],
            )
        )

        def arrived(events: list[dict[str, Any]]) -> bool:
            return bool(
                socket.of("patient_removed", hpid=moving_hpid, date=day)
                and socket.of("patient_status_changed", hpid=cancelled_hpid, status="cancelled")
                and socket.of("patient_removed", hpid=deleted_hpid, date=day)  # the minute's full read
            )

        socket.until(arrived, 100, "the move, the cancellation and the deletion")
        socket.drain(POLL_S + 2)  # one more poll: nothing is announced twice

    assert socket.of("patient_removed", hpid=moving_hpid) == [
        e for e in socket.of("patient_removed", hpid=moving_hpid) if e["data"]["to_date"] == other
    ]
    assert len(socket.of("patient_removed", hpid=moving_hpid)) == 1
    assert len(socket.of("patient_removed", hpid=deleted_hpid)) == 1
    assert socket.of("patient_removed", hpid=deleted_hpid)[0]["data"]["reason"] == "deleted"
    assert len(socket.of("patient_status_changed", hpid=cancelled_hpid)) == 1
    assert socket.of("schedule_synced", date=other), "the day the patient moved to is announced"
    assert all(e["data"]["mode"] in {"watch", "watch_full"} for e in socket.of("schedule_synced"))

    today_board, other_board = board(api_server, day, auth_headers), board(api_server, other, auth_headers)
    assert moving_hpid not in today_board and deleted_hpid not in today_board
    assert today_board[cancelled_hpid]["status"] == "cancelled"
    assert other_board[moving_hpid]["appointment_time"].startswith(f"{other}T16:30")
    assert new_hpid in other_board
    listed = requests.get(
        f"{api_server}/api/v1/appointments", params={"start": day}, headers=auth_headers, timeout=5
    ).json()["data"]
    assert len(listed) == len(rows) - 2  # moved away and deleted; the cancelled one is still Tebra's
    assert not redis_client.keys("sync:lock:*"), "nobody asked for a sync"


def test_a_visit_under_way_that_tebra_moves_or_cancels_stays_flagged_until_the_clinic_acts(
    beat: Any, api_server: str, sim: Any, redis_client: redis.Redis, settings: Any, auth_headers: Any
) -> None:
    day, later = weekday_ahead(3), weekday_ahead(4)
    beat()
    wait_first_full_poll(redis_client)
    moving, cancelled = single_visits(sim.appointments(day), 2)
    moving_hpid, cancelled_hpid = (
        hpid_of(settings, moving["patient_id"]),
        hpid_of(settings, cancelled["patient_id"]),
    )
    for hpid in (moving_hpid, cancelled_hpid):
        response = requests.patch(
            f"{api_server}/api/v1/patients/{hpid}/status",
            params={"date": day},
            json={"status": "arrived"},
            headers=auth_headers,
            timeout=5,
        )
        assert response.status_code == 200, response.text
    with listening(api_server, auth_headers, [f"patients:{day}"]) as socket:
        sim.edit_appointment("reschedule", id=moving["id"], start=f"{later}T15:00:00")
        sim.edit_appointment("cancel", id=cancelled["id"])
        socket.until(lambda _: len(socket.of("patient_conflict")) >= 2, 40, "two conflict flags")

        flagged = board(api_server, day, auth_headers)
        assert flagged[moving_hpid]["status"] == "arrived"
        assert flagged[moving_hpid]["tebra_conflict"]["kind"] == "moved"
        assert flagged[moving_hpid]["tebra_conflict"]["to_date"] == later
        assert flagged[cancelled_hpid]["status"] == "arrived"
        assert flagged[cancelled_hpid]["tebra_conflict"] == {"kind": "status", "status": "cancelled"}
        assert not socket.of("patient_removed"), "a patient in the clinic is never dropped silently"

        response = requests.patch(
            f"{api_server}/api/v1/patients/{moving_hpid}/status",
            params={"date": day},
            json={"status": "appt-prep", "version": flagged[moving_hpid]["version"]},
            headers=auth_headers,
            timeout=5,
        )
        assert response.status_code == 200, response.text
        socket.drain(2 * POLL_S + 1)  # polls go on: the resolved flag is not raised again
    after = board(api_server, day, auth_headers)
    assert after[moving_hpid]["tebra_conflict"] is None and after[moving_hpid]["status"] == "appt-prep"
    assert after[cancelled_hpid]["tebra_conflict"] == {"kind": "status", "status": "cancelled"}
    assert len(socket.of("patient_conflict", hpid=moving_hpid)) == 1
    assert len(socket.of("patient_conflict", hpid=cancelled_hpid)) == 1


def test_two_beats_run_one_watch_at_a_time_and_announce_once(
    beat: Any, api_server: str, sim: Any, redis_client: redis.Redis, settings: Any, auth_headers: Any
) -> None:
    day = weekday_ahead(5)
    beat("beat-a")
    beat("beat-b")
    wait_first_full_poll(redis_client)
    target = single_visits(sim.appointments(day), 1)[0]
    began = time.time()
    with listening(api_server, auth_headers, [f"patients:{day}"]) as socket:
        sim.edit_appointment(
            "status", id=target["id"], status="Confirmed" if target["status"] != "Confirmed" else "Scheduled"
        )
        socket.until(lambda _: bool(socket.of("patient_status_changed")), 30, "the status change")
        socket.drain(4 * POLL_S)
    assert len(socket.of("patient_status_changed", hpid=hpid_of(settings, target["patient_id"]))) == 1
    polls = [
        int(entry_id.split("-")[0]) / 1000
        for entry_id, fields in redis_client.xrange(keys.TASK_RESULTS)
        if fields["action"] == names.WATCH and int(entry_id.split("-")[0]) / 1000 >= began
    ]
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    # Two beats tick 4 times in 5 s between them; the lease and the due check leave one poll per interval.
    assert polls and min(gaps, default=POLL_S) >= POLL_S / 2 - 0.5, gaps


@pytest.mark.parametrize(
    ("stamp_tz", "behind_s"),
    [("America/Los_Angeles", 7200), ("America/New_York", -3600)],
    ids=["stamps-2h-behind", "stamps-1h-ahead"],
)
def test_changes_are_seen_whatever_zone_tebra_stamps_them_in(
    beat: Any,
    api_server: str,
    sim: Any,
    redis_client: redis.Redis,
    settings: Any,
    auth_headers: Any,
    stamp_tz: str,
    behind_s: int,
) -> None:
    sim.set_faults(stamp_tz=stamp_tz)
    day = weekday_ahead(6)
    beat()
    wait_first_full_poll(redis_client)
    targets = single_visits(sim.appointments(day), 2)
    with listening(api_server, auth_headers, [f"patients:{day}"]) as socket:
        for target in targets:  # the first measures the lag, the second is read with it
            sim.edit_appointment("cancel", id=target["id"])
            hpid = hpid_of(settings, target["patient_id"])
            socket.until(lambda _, h=hpid: bool(socket.of("patient_status_changed", hpid=h)), 30, "a change")
            time.sleep(POLL_S)
    assert redis_client.hget(keys.WATCH_STATE, "last_mode") == "watch"  # seen by the incremental polls
    behind_max = float(redis_client.hget(keys.TEBRA_CLOCK, "behind_max_s") or "nan")
    assert behind_s <= behind_max <= behind_s + 60, behind_max


def test_an_open_breaker_defers_the_watch_and_nothing_is_lost(
    beat: Any, api_server: str, sim: Any, redis_client: redis.Redis, settings: Any, auth_headers: Any
) -> None:
    day = weekday_ahead(7)
    beat()
    wait_first_full_poll(redis_client)
    target = single_visits(sim.appointments(day), 1)[0]
    store = BreakerStore.from_settings(redis_client, settings)
    store.force_open(by="test")
    with listening(api_server, auth_headers, [f"patients:{day}"]) as socket:
        calls = sim.stats()["calls"].get("GetAppointments", 0)
        sim.edit_appointment("cancel", id=target["id"])
        wait_until(
            lambda: redis_client.hget(keys.WATCH_STATE, "last_error") == "CIRCUIT_OPEN", 30, "a deferred poll"
        )
        time.sleep(POLL_S)
        assert sim.stats()["calls"].get("GetAppointments", 0) == calls  # the breaker spared Tebra
        assert not socket.of("patient_status_changed")
        store.clear()
        hpid = hpid_of(settings, target["patient_id"])
        socket.until(
            lambda _: bool(socket.of("patient_status_changed", hpid=hpid)), 30, "the caught-up change"
        )


def test_a_refused_login_pauses_the_watch_after_one_call_and_resume_catches_up(
    beat: Any, api_server: str, sim: Any, redis_client: redis.Redis, settings: Any, auth_headers: Any
) -> None:
    day = weekday_ahead(9)
    beat()
    wait_first_full_poll(redis_client)
    target = single_visits(sim.appointments(day), 1)[0]
    sim.set_faults(security="bad_password")
    with listening(api_server, auth_headers, [f"patients:{day}"]) as socket:
        sim.edit_appointment("cancel", id=target["id"])
        wait_until(
            lambda: redis_client.hget(keys.WATCH_STATE, "last_error") == "TEBRA_CREDENTIALS_REFUSED",
            30,
            "the watch paused by the credentials latch",
        )
        socket.drain(3 * POLL_S)  # ticks go on: the latch stops every one of them before Tebra
        refused = sum(sim.stats().get("security_failures", {}).values())
        assert refused == 1, sim.stats()
        assert not socket.of("patient_status_changed")

        sim.set_faults(security=None)  # the operator fixed the credentials
        response = requests.post(
            f"{api_server}/api/v1/ops/tebra", json={"action": "resume"}, headers=auth_headers, timeout=5
        )
        assert response.ok, response.text
        hpid = hpid_of(settings, target["patient_id"])
        socket.until(
            lambda _: bool(socket.of("patient_status_changed", hpid=hpid)), 40, "the caught-up change"
        )
    assert sum(sim.stats().get("security_failures", {}).values()) == 1
