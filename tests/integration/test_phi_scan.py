"""No patient data in clear anywhere it could leak: Redis keys and values, broker messages, task results,
process logs.

Real stack: the simulator over HTTP, a real prefork worker, the API under gunicorn. The simulator's patients
are generated from its seed; the test reads the day's patients back from ``/_sim/appointments`` and rebuilds
each one's full record from the same seed (names, date of birth, phones, e-mail, street) as the markers.
Syncs go through the API with a token, patient details come in through the worker's GetPatient tasks, and
while that runs a Redis MONITOR records every command sent to the test databases (so even broker messages
consumed and deleted meanwhile are seen, their base64 bodies decoded). Then every key and value of both
databases and every captured log is scanned. A marker found anywhere fails the test, naming where.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
import requests

from tasks import keys, names
from tebra_sim.clinic import Clinic
from tests.conftest import TEST_BROKER_URL, TEST_REDIS_URL

pytestmark = pytest.mark.usefixtures("worker")

_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{16,}={0,2}")
# Free text a practice might write into an appointment's reason: clinical words that must never be in clear.
REASON_MARKER = "Zelmoric rash, suspected Vantrel allergy"


def _db(url: str) -> int:
    return int(url.rsplit("/", 1)[-1] or 0)


class Wiretap:
    """Every command sent to the given databases while it runs, from a Redis MONITOR connection."""

    def __init__(self, url: str, dbs: set[int]) -> None:
        self._client = redis.Redis.from_url(url)
        self._dbs = dbs
        self._stop = threading.Event()
        self.commands: list[str] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self._client.monitor() as monitor:
            self._ready.set()
            while not self._stop.is_set():
                command = monitor.next_command()
                if command.get("db") in self._dbs:
                    self.commands.append(str(command["command"]))

    def __enter__(self) -> Wiretap:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        redis.Redis.from_url(TEST_REDIS_URL).ping()  # wakes the monitor so it sees the flag
        self._thread.join(5)
        self._client.close()


def expand(blob: bytes) -> bytes:
    """The blob, followed by the decoding of every base64-looking run in it (kombu bodies are base64)."""
    decoded = [blob]
    for run in _BASE64_RUN.findall(blob):
        for alphabet in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                decoded.append(alphabet(run + b"=" * (-len(run) % 4)))
            except (binascii.Error, ValueError):
                continue
    return b"\n".join(decoded)


def dump_db(url: str) -> dict[str, bytes]:
    """Every key of one database with its value(s), as bytes."""
    client = redis.Redis.from_url(url)
    out: dict[str, bytes] = {}
    for raw_key in client.scan_iter(count=500):
        kind = client.type(raw_key).decode()
        if kind == "string":
            value: Any = client.get(raw_key)
        elif kind == "hash":
            value = client.hgetall(raw_key)
        elif kind == "list":
            value = client.lrange(raw_key, 0, -1)
        elif kind == "set":
            value = client.smembers(raw_key)
        elif kind == "zset":
            value = client.zrange(raw_key, 0, -1, withscores=True)
        elif kind == "stream":
            value = client.xrange(raw_key)
        else:
            value = b""
        out[f"db{_db(url)}:{raw_key.decode(errors='replace')}"] = raw_key + b"\n" + repr(value).encode()
    client.close()
    return out


def clinic_days(count: int) -> list[str]:
    """The next clinic days (Monday to Friday) from 5 days ahead: apart from the other sync tests' days."""
    today = datetime.now(ZoneInfo("America/Chicago")).date()
    days = [today + timedelta(days=offset) for offset in range(5, 20)]
    return [day.isoformat() for day in days if day.weekday() < 5][:count]


def markers_for(simulator: Any, days: list[str]) -> tuple[set[str], set[str]]:
    """PHI strings of the patients booked on ``days`` (rebuilt from the simulator's seed), and their ids."""
    health, clinic_info = simulator.health(), simulator.clinic()
    clinic = Clinic(
        int(health["seed"]), clinic_info["practice"]["name"], int(clinic_info["appointments_per_day"])
    )
    markers: set[str] = set()
    patient_ids: set[str] = set()
    for day in days:
        for row in simulator.appointments(day):
            patient = clinic.patient(int(row["patient_id"]))
            assert patient is not None and row["patient_full_name"] == patient.full_name
            patient_ids.add(str(patient.id))
            markers |= {
                patient.full_name,
                f"{patient.first_name} {patient.last_name}",
                patient.email,
                patient.home_phone,
                patient.mobile_phone,
                patient.address_line1,
                patient.dob.isoformat(),
            }
            if len(patient.last_name) >= 6:
                markers.add(patient.last_name)
            markers.add(str(row["reason"]))  # the appointment reason is free text: as private as the name
    return markers, patient_ids


def wait_for_details(client: redis.Redis, days: list[str], timeout: float = 60) -> int:
    """Wait until every patient of ``days`` has had its details lookup (complete or incomplete)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = [
            client.hget(keys.patient(hpid, day), "details")
            for day in days
            for hpid in client.smembers(keys.patients_index(day))
        ]
        if entries and all(state in {"complete", "incomplete"} for state in entries):
            return len(entries)
        time.sleep(0.2)
    raise AssertionError("patient details never finished")


def test_no_phi_in_redis_broker_results_or_logs(
    api_server: str,
    sim: Any,
    redis_client: redis.Redis,
    auth_headers: dict[str, str],
    logs_dir: Path,
) -> None:
    days = clinic_days(2)
    booked = sim.appointments(days[0])[0]
    sim.edit_appointment(
        "add", patient_id=booked["patient_id"], start=f"{days[0]}T16:30:00", reason=REASON_MARKER
    )
    markers, patient_ids = markers_for(sim, days)
    assert REASON_MARKER in markers
    assert len(markers) > 20, "the days have patients"
    tapped = {_db(TEST_REDIS_URL), _db(TEST_BROKER_URL)}

    with Wiretap(TEST_REDIS_URL, tapped) as tap:
        for day in days:
            response = requests.post(
                f"{api_server}/api/v1/schedule/sync", params={"date": day}, headers=auth_headers, timeout=5
            )
            assert response.status_code == 202, response.text
        patients = wait_for_details(redis_client, days)
        # The API serves the names to an authorized caller (that is its job): they must not leak on the way.
        rows = requests.get(
            f"{api_server}/api/v1/appointments",
            params={"start": days[0], "end": days[-1]},
            headers=auth_headers,
            timeout=5,
        ).json()["data"]
        time.sleep(1.0)  # let log lines and late task results land
    assert patients > 0 and rows
    served = {row["patient_name"] for row in rows}
    assert served & markers, "the markers are the names the API serves"
    assert REASON_MARKER in {row["reason"] for row in rows}, "and the reasons"

    sources: dict[str, bytes] = {}
    for url in (TEST_REDIS_URL, TEST_BROKER_URL):
        sources.update(dump_db(url))
    sources["redis MONITOR (every command)"] = "\n".join(tap.commands).encode()
    for log in sorted(logs_dir.glob("*.log")):
        sources[f"log {log.name}"] = log.read_bytes()
    assert any("celery-task-meta" in name for name in sources) or any(
        name.endswith(keys.TASK_RESULTS) for name in sources
    ), "task results were scanned"
    assert len(tap.commands) > 50, "the wiretap saw the traffic"
    assert any(names.SYNC in command for command in tap.commands), "it saw the task messages"
    assert any(names.FETCH_DETAILS in command for command in tap.commands), "and the details tasks"

    found = []
    for where, blob in sources.items():
        text = expand(blob)
        for marker in markers:
            if marker.encode() in text:
                found.append(f"{marker!r} in {where}")
    assert not found, "PHI in clear:\n" + "\n".join(sorted(found)[:30])

    # Keys name patients only by hpid: no key segment is a raw Tebra patient id.
    for name in dump_db(TEST_REDIS_URL):
        segments = set(name.split(":")[1:])
        assert not segments & patient_ids, f"raw patient id in key {name}"


def test_the_scan_reads_base64_message_bodies() -> None:
    body = base64.b64encode(b'[["2026-11-30"], {"name": "Zorabel Q. Kintaro"}, {}]')
    message = (
        b'{"body": "' + body + b'", "content-encoding": "utf-8", "properties": {"body_encoding": "base64"}}'
    )
    assert b"Zorabel Q. Kintaro" in expand(message)
