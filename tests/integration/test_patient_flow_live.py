"""Status changes against the API under gunicorn (gthread): real concurrency and a real WebSocket.

- Many nurses at once: threads PATCH the same patient together; the Lua script serializes them, so exactly
  one wins and exactly one event is appended per accepted change.
- Reconnect with ``since``: a socket that was away gets what it missed, in order, then live events, with
  no gap and no duplicate, while changes keep landing during the reconnect.

Redis pub/sub is server-wide: other suites' events reach this API's relay too, so each test uses its own
far-off date and its own patients, and looks only at those.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import requests
from websockets.sync.client import ClientConnection, connect

from config import Settings
from tasks import events, keys
from tasks.patients import flow
from tests.support.patients import quiet_date, seed_day

NURSES = 16


def url(api: str, hpid: str, date: str) -> str:
    return f"{api}/api/v1/patients/{hpid}/status?date={date}"


def status_events(client: redis.Redis, hpid: str) -> list[dict[str, Any]]:
    found = []
    for entry_id, fields in client.xrange(keys.AGENT_UPDATES):
        envelope = events.envelope_from_entry(entry_id, fields)
        if envelope["type"] == events.PATIENT_STATUS_CHANGED and envelope["data"]["hpid"] == hpid:
            found.append(envelope)
    return found


def nurse_headers(make_token: Any, index: int) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(scopes=['write:patients'], sub=f'test|nurse-{index}')}"}


def click_together(
    api: str, hpid: str, date: str, bodies: list[dict[str, Any]], headers: list[dict[str, str]]
) -> list[requests.Response]:
    """Every body PATCHed at once from its own thread and session (released by one barrier)."""
    barrier = threading.Barrier(len(bodies))

    def click(index: int) -> requests.Response:
        with requests.Session() as session:
            session.get(f"{api}/health", timeout=5)  # connect first: the race is between requests
            barrier.wait(10)
            return session.patch(url(api, hpid, date), json=bodies[index], headers=headers[index], timeout=10)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(click, range(len(bodies))))


@pytest.mark.parametrize("with_version", [True, False], ids=["same-version", "no-version"])
def test_nurses_clicking_at_once_exactly_one_wins(
    api_server: str,
    settings: Settings,
    redis_client: redis.Redis,
    make_token: Any,
    with_version: bool,
) -> None:
    date = quiet_date()
    (hpid,) = seed_day(redis_client, settings, date, [flow.SCHEDULED], prefix="race")
    targets = [flow.CONFIRMED, flow.ARRIVED, flow.CANCELLED, flow.NO_SHOW]  # all allowed from scheduled
    bodies = [
        {"status": targets[i % len(targets)], **({"version": 1} if with_version else {})}
        for i in range(NURSES)
    ]
    if not with_version:  # without a version only the same target can collide: all want "arrived"
        bodies = [{"status": flow.ARRIVED} for _ in range(NURSES)]
    headers = [nurse_headers(make_token, i) for i in range(NURSES)]

    responses = click_together(api_server, hpid, date, bodies, headers)

    codes = sorted(response.status_code for response in responses)
    assert codes == [200] + [409] * (NURSES - 1), codes
    (winner,) = [response.json()["data"] for response in responses if response.status_code == 200]
    for response in responses:
        if response.status_code == 409:
            assert response.json()["error"]["code"] == "CONFLICT"
            assert response.json()["error"]["details"]["status"] == winner["status"]
    entry = redis_client.hgetall(keys.patient(hpid, date))
    assert (entry["status"], entry["version"], entry["status_source"]) == (winner["status"], "2", "local")
    published = status_events(redis_client, hpid)
    assert len(published) == 1, published
    assert published[0]["id"] == winner["event_id"]
    assert published[0]["data"]["previous"] == flow.SCHEDULED


def test_every_accepted_change_has_exactly_one_event(
    api_server: str, settings: Settings, redis_client: redis.Redis, make_token: Any
) -> None:
    """Nurses keep moving one patient along (each retrying with the version a 409 reports): one event each."""
    date = quiet_date()
    (hpid,) = seed_day(redis_client, settings, date, [flow.SCHEDULED], prefix="walk")
    accepted: list[dict[str, Any]] = []
    lock = threading.Lock()

    def nurse(index: int) -> None:
        headers = nurse_headers(make_token, index)
        with requests.Session() as session:
            version, status = 1, flow.SCHEDULED
            for _ in range(40):
                following = flow.allowed_next(status)
                if not following:
                    return
                wanted = flow.ARRIVED if flow.ARRIVED in following else following[0]
                body = {"status": wanted, "version": version}
                response = session.patch(url(api_server, hpid, date), json=body, headers=headers, timeout=10)
                if response.status_code == 200:
                    with lock:
                        accepted.append(response.json()["data"])
                    version, status = response.json()["data"]["version"], wanted
                else:
                    details = response.json()["error"]["details"]
                    version, status = details["version"], details["status"]

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(nurse, range(4)))

    path = [
        flow.ARRIVED,
        flow.APPT_PREP,
        flow.READY_FOR_MD,
        flow.WITH_DOCTOR,
        flow.SEEN_BY_MD,
        flow.COMPLETED,
    ]
    assert sorted((change["version"], change["status"]) for change in accepted) == list(
        zip(range(2, 2 + len(path)), path, strict=True)
    )
    published = status_events(redis_client, hpid)
    assert [event["data"]["status"] for event in published] == path
    assert sorted(event["id"] for event in published) == sorted(change["event_id"] for change in accepted)


# -- replay over a real socket ------------------------------------------------------------------------------


def ws_url(api: str) -> str:
    return api.replace("http://", "ws://") + "/ws"


@contextmanager
def open_socket(api: str, token: str, topic: str, since: str | None = None) -> Iterator[ClientConnection]:
    """A socket with a header token, subscribed to ``topic`` (replaying after ``since`` when given)."""
    headers = {"Authorization": f"Bearer {token}"}
    with connect(ws_url(api), open_timeout=5, additional_headers=headers) as ws:
        ws.send(json.dumps({"type": "subscribe", "topics": [topic], **({"since": since} if since else {})}))
        while True:
            reply = json.loads(ws.recv(timeout=5))
            if reply.get("type") == "subscribed":
                assert not reply.get("replay_gap")
                break
        yield ws


def changes_of(
    ws: ClientConnection, hpid: str, until_version: int, timeout: float = 10
) -> Iterator[dict[str, Any]]:
    """The socket's patient_status_changed events for ``hpid`` up to ``until_version``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = json.loads(ws.recv(timeout=max(0.05, deadline - time.monotonic())))
        if message.get("type") == events.PATIENT_STATUS_CHANGED and message["data"]["hpid"] == hpid:
            yield message
            if message["data"]["version"] >= until_version:
                return
    raise AssertionError(f"no version {until_version} within {timeout}s")


def test_a_socket_that_reconnects_with_since_misses_nothing_and_sees_nothing_twice(
    api_server: str, settings: Settings, redis_client: redis.Redis, make_token: Any
) -> None:
    date = quiet_date()
    topic = f"patients:{date}"
    (hpid,) = seed_day(redis_client, settings, date, [flow.ARRIVED], prefix="replay")
    token = make_token(sub="test|board")
    nurse = nurse_headers(make_token, 0)
    total = 60  # room changes: version 2 .. 61
    writer_done = threading.Event()
    accepted: list[str] = []

    def keep_changing() -> None:
        # One nurse renames the room over and over, 5 ms apart, across the whole disconnect/reconnect.
        with requests.Session() as session:
            for version in range(1, total + 1):
                body = {"status": flow.ARRIVED, "room": f"R{version}", "version": version}
                response = session.patch(url(api_server, hpid, date), json=body, headers=nurse, timeout=10)
                assert response.status_code == 200, response.text
                accepted.append(response.json()["data"]["event_id"])
                time.sleep(0.005)
        writer_done.set()

    seen: list[dict[str, Any]] = []
    writer = threading.Thread(target=keep_changing)
    board = requests.get(
        f"{api_server}/api/v1/patients",
        params={"date": date},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    ).json()
    assert [row["version"] for row in board["data"]] == [1]
    # The board's read names the newest event at that instant: subscribing from it misses nothing after.
    with open_socket(api_server, token, topic, since=board["last_event_id"]) as ws:
        writer.start()
        seen.extend(changes_of(ws, hpid, until_version=11))  # live for a while, then away…
    time.sleep(0.1)  # …while the changes go on
    missed_from = seen[-1]["id"]
    written_while_away = len(accepted) - 10  # versions 2..11 were seen live
    with open_socket(api_server, token, topic, since=missed_from) as ws:
        seen.extend(changes_of(ws, hpid, until_version=total + 1, timeout=20))
        writer.join(10)
        assert writer_done.is_set()
        # A last change after the writer stopped arrives live, once.
        last = requests.patch(
            url(api_server, hpid, date), json={"status": flow.APPT_PREP}, headers=nurse, timeout=10
        )
        assert last.status_code == 200
        seen.extend(changes_of(ws, hpid, until_version=total + 2))
        with pytest.raises(TimeoutError):
            while True:  # nothing more for this patient: no duplicate trails behind
                extra = json.loads(ws.recv(timeout=0.5))
                assert extra.get("data", {}).get("hpid") != hpid, extra

    versions = [event["data"]["version"] for event in seen]
    assert versions == list(range(2, total + 3)), versions  # in order, no gap, no duplicate
    assert [event["id"] for event in seen] == [*accepted, last.json()["data"]["event_id"]]
    assert written_while_away > 0, "changes landed while the socket was away (so some were replayed)"
