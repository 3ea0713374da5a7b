"""Helpers for the Tebra end-to-end tests (test_tebra_*.py, test_throttle_*.py): ask the API for a sync, wait
for its final status, read the events it published.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import redis
import requests

from tasks import keys
from tasks.events import read_since

CLINIC_TZ = ZoneInfo("America/Chicago")


def clinic_date(offset_days: int) -> str:
    """A clinic day relative to today in the clinic's zone (the API refuses dates far from today)."""
    return (datetime.now(CLINIC_TZ).date() + timedelta(days=offset_days)).isoformat()


def weekday_ahead(n: int) -> str:
    """The ``n``-th weekday after today in the clinic's zone (n >= 1; distinct n, distinct days).

    For tests that need appointments: the simulator books weekdays only, so "tomorrow" fails on a Saturday
    (and "today + n" on whichever day of the week lands it on a weekend).
    """
    day = datetime.now(CLINIC_TZ).date()
    found = 0
    while found < n:
        day += timedelta(days=1)
        found += day.weekday() < 5
    return day.isoformat()


def clinic_weekday(offset_days: int) -> str:
    """The clinic day ``offset_days`` from today, moved back to a weekday (the simulator books weekdays)."""
    day = datetime.now(CLINIC_TZ).date() + timedelta(days=offset_days)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return day.isoformat()


def request_sync(api: str, date: str, headers: dict[str, str]) -> dict[str, Any]:
    response = requests.post(f"{api}/api/v1/schedule/sync", params={"date": date}, headers=headers, timeout=5)
    assert response.status_code == 202, response.text
    return dict(response.json()["data"])


def sync_status(api: str, date: str, headers: dict[str, str]) -> dict[str, Any] | None:
    response = requests.get(f"{api}/api/v1/schedule/status/{date}", headers=headers, timeout=5)
    return dict(response.json()["data"]) if response.ok else None


def wait_for_state(
    api: str,
    date: str,
    states: set[str],
    headers: dict[str, str],
    timeout: float = 30,
    seen: list[str] | None = None,
) -> dict[str, Any]:
    """Poll GET /schedule/status/{date} until its state is one of ``states``; ``seen`` collects the states
    (and error codes) passed through on the way."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = sync_status(api, date, headers) or {}
        if seen is not None and status:
            mark = f"{status['state']}:{status.get('error') or ''}"
            if not seen or seen[-1] != mark:
                seen.append(mark)
        if status.get("state") in states:
            return status
        time.sleep(0.05)
    raise AssertionError(f"sync of {date} never reached {states}: {status}")


def events_of(client: redis.Redis, event_type: str, date: str | None = None) -> list[dict[str, Any]]:
    """Every ``agent_updates`` entry of one type (and date), oldest first."""
    return [
        e
        for e in read_since(client, "0-0", count=100000)
        if e["type"] == event_type and (date is None or e["data"].get("date") == date)
    ]


def wait_for_events(
    client: redis.Redis, event_type: str, date: str, count: int, timeout: float = 30
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = events_of(client, event_type, date)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{len(found)} of {count} {event_type} events for {date} within {timeout}s")


def day_snapshot(client: redis.Redis, date: str) -> dict[str, Any]:
    """Appointments and flow entries of a day, without the write-time stamps and without what the patient
    details lookups write (they run after a sync, on their own time: not the sync's bytes)."""
    out: dict[str, Any] = {"appointments": client.hgetall(keys.appointments(date))}
    for hpid in sorted(client.smembers(keys.patients_index(date))):
        entry = client.hgetall(keys.patient(hpid, date))
        for stamp in ("updated_at", "details_at", "details", "dob"):
            entry.pop(stamp, None)
        out[hpid] = entry
    return out


def ws_url(api: str) -> str:
    return api.replace("http://", "ws://") + "/ws"


def subscribe(ws: Any, topics: list[str]) -> None:
    ws.send(json.dumps({"type": "subscribe", "topics": topics}))
    while True:
        reply = json.loads(ws.recv(timeout=5))
        if reply.get("type") == "subscribed":
            return


def wait_for_ws_event(ws: Any, event_type: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if message.get("type") == event_type:
            return dict(message)
    raise AssertionError(f"no {event_type} on the socket within {timeout}s")
