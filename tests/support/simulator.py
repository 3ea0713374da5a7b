"""The Tebra simulator as a real subprocess, for any test that needs Tebra over HTTP.

    with start_simulator(throttle=False, seed=7) as sim:
        zeep.Client(sim.wsdl_url)...
        sim.set_faults(internal_fault={"count": 1})
        sim.stats()["accepted"]["GetAppointments"]

Each simulator runs ``python -m tebra_sim`` on a free loopback port, in its own session, and is stopped by pid
(SIGTERM, then SIGKILL after a grace period). The admin calls go through ``requests`` with short timeouts.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from tests.support.processes import free_port, spawn, stop, wait_until

ADMIN_TIMEOUT_S = 5.0
START_TIMEOUT_S = 20.0


class Simulator:
    """A running simulator: its URLs and the admin API (docs/simulator.md)."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.base_url = f"http://127.0.0.1:{port}"
        self.endpoint_url = f"{self.base_url}/KareoServices.svc"
        self.wsdl_url = f"{self.endpoint_url}?wsdl"
        self._http = requests.Session()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(
            method, f"{self.base_url}/_sim/{path}", timeout=ADMIN_TIMEOUT_S, **kwargs
        )
        if not response.ok:
            raise RuntimeError(f"simulator {method} /_sim/{path}: {response.status_code} {response.text}")
        return response.json()

    def health(self) -> dict[str, Any]:
        return dict(self._admin("GET", "health"))

    def set_faults(self, **switches: Any) -> dict[str, Any]:
        """Flip fault switches (only those given change); answers the whole fault state."""
        return dict(self._admin("POST", "faults", json=switches))

    def faults(self) -> dict[str, Any]:
        return dict(self._admin("GET", "faults"))

    def reset(self) -> None:
        """Counters, faults, throttle history and appointment edits back to the seed."""
        self._admin("POST", "reset")

    def stats(self) -> dict[str, Any]:
        return dict(self._admin("GET", "stats"))

    def clinic(self) -> dict[str, Any]:
        """The practice, providers and locations of this seed."""
        return dict(self._admin("GET", "clinic"))

    def appointments(self, date: dt.date | str) -> list[dict[str, Any]]:
        """What the simulator holds for that practice-local day, edits applied."""
        day = date.isoformat() if isinstance(date, dt.date) else date
        return list(self._admin("GET", "appointments", params={"date": day})["appointments"])

    def edit_appointment(self, action: str, **fields: Any) -> dict[str, Any]:
        """``status`` (id, status), ``cancel`` (id), ``reschedule`` (id, start, [duration_minutes]) or
        ``add`` (patient_id, start, [provider_id, location_id, duration_minutes, status, reason])."""
        body = {
            "action": action,
            **{k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in fields.items()},
        }
        return dict(self._admin("POST", "appointments", json=body))

    def stop(self) -> None:
        self._http.close()
        stop(self.proc, timeout=10)


def _args(options: Mapping[str, Any], port: int) -> list[str]:
    args = [sys.executable, "-m", "tebra_sim", "--host", "127.0.0.1", "--port", str(port)]
    for name in ("seed", "appointments_per_day", "latency_ms", "max_range_days"):
        if options.get(name) is not None:
            args += [f"--{name.replace('_', '-')}", str(options[name])]
    if options.get("throttle") is False:
        args.append("--no-throttle")
    return args


@contextmanager
def start_simulator(
    *,
    seed: int | None = None,
    appointments_per_day: int | None = None,
    latency_ms: int | None = None,
    max_range_days: int | None = None,
    throttle: bool = True,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
    **faults: Any,
) -> Iterator[Simulator]:
    """Start a simulator subprocess and wait for ``/_sim/health``; stop it on exit.

    ``env`` adds environment variables (TEBRA_USER, CLINIC_TZ, …); any other keyword is a fault switch applied
    once it answers (``throttle_shape="http_429"``, ``security="bad_password"``…).
    """
    options = {
        "seed": seed,
        "appointments_per_day": appointments_per_day,
        "latency_ms": latency_ms,
        "max_range_days": max_range_days,
        "throttle": throttle,
    }
    folder = log_dir or Path(tempfile.mkdtemp(prefix="tebra-sim-"))
    sim: Simulator | None = None
    for attempt in range(3):  # a free port can be taken between the probe and the bind: try another
        port = free_port()
        log = folder / f"tebra-sim-{port}.log"
        proc = spawn(_args(options, port), dict(env or {}), log)
        sim = Simulator(proc, port, log)
        try:
            wait_until(lambda s=sim: bool(s.health()), START_TIMEOUT_S, "tebra simulator", proc, log)
            break
        except RuntimeError:
            sim.stop()
            if attempt == 2 or "Address already in use" not in log.read_text(errors="replace"):
                raise
            time.sleep(0.1)
    assert sim is not None
    try:
        if faults:
            sim.set_faults(**faults)
        yield sim
    finally:
        sim.stop()
