"""What "acknowledged means kept" costs a PATCH: the status change with and without ``WAIT 1 <ms>``.

A real primary, replica and three sentinels on this machine (replication over loopback, so the figure is
the floor of WAIT's cost: a replica in another zone adds its round trip). The API runs in-process (Flask's
test client: no HTTP, so the difference between the two runs is the WAIT and nothing else) and moves
``--patients`` patients from scheduled to confirmed, one PATCH after another, first with
REDIS_WAIT_REPLICA_MS=0, then with it at 1000, each on a fresh day; the same sentinels serve both.

    .venv/bin/python -m bench.replica_ack --patients 300
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app import create_app, devkey, devtoken
from app.scopes import ALL_SCOPES
from bench.common import percentiles
from bench.stack import machine, write_result
from config import Settings, load_settings
from tasks import connections
from tasks.patients import flow
from tests.support.patients import seed_day
from tests.support.redis_ha import SentinelGroup


def day(ahead: int) -> str:
    """A clinic day ``ahead`` days from today (the API takes days within a year of today)."""
    return (datetime.now(UTC).date() + timedelta(days=ahead)).isoformat()


def run(settings: Settings, headers: dict[str, str], date: str, patients: int) -> dict[str, float]:
    data = connections.make_redis(settings)
    hpids = seed_day(data, settings, date, [flow.SCHEDULED] * patients, prefix="bench")
    api = create_app(settings).test_client()
    api.patch(
        f"/api/v1/patients/{hpids[0]}/status?date={date}", json={"status": flow.CONFIRMED}, headers=headers
    )
    took = []
    for hpid in hpids[1:]:
        started = time.perf_counter()
        response = api.patch(
            f"/api/v1/patients/{hpid}/status?date={date}", json={"status": flow.CONFIRMED}, headers=headers
        )
        took.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.get_json()
    return {key: round(value, 2) for key, value in percentiles(took).items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=300, help="PATCHes per run (one patient each)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-replica-ack-") as folder:
        group = SentinelGroup(Path(folder)).start()
        try:
            key_path = str(Path(folder) / "dev-key.pem")
            token = devtoken.mint(
                devkey.load_or_create(key_path),
                audience=Settings().auth0_audience,
                scopes=ALL_SCOPES,
                subject="bench|replica-ack",
                ttl_s=3600,
            )
            headers = {"Authorization": f"Bearer {token}"}
            env = {
                "APP_ENV": "test",
                "REDIS_URL": "redis://127.0.0.1:1/3",
                "REDIS_SENTINELS": group.sentinels,
                "AUTH_MODE": "dev",
                "DEV_KEY_PATH": key_path,
                "LOG_LEVEL": "WARNING",
                "RATE_LIMIT_CAPACITY": "1000000",
            }
            off = run(load_settings({**env, "REDIS_WAIT_REPLICA_MS": "0"}), headers, day(30), args.patients)
            on = run(load_settings({**env, "REDIS_WAIT_REPLICA_MS": "1000"}), headers, day(31), args.patients)
        finally:
            group.stop()
    result = {
        "machine": machine(),
        "patients": args.patients,
        "patch_ms_without_wait": off,
        "patch_ms_with_wait": on,
        "wait_cost_ms": {key: round(on[key] - off[key], 2) for key in ("p50", "p95")},
    }
    print(f"PATCH without WAIT: {off}\nPATCH with WAIT 1: {on}\ncost: {result['wait_cost_ms']}", flush=True)
    write_result("replica_ack", result)
    return result


if __name__ == "__main__":
    main()
