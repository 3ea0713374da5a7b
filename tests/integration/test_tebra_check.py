"""`make check-tebra` on the simulator over HTTP, and the same check run by a worker from the ops API."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tasks import tebra_check

ROOT = Path(__file__).resolve().parents[2]


def make_check(env: dict[str, str], **overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "check-tebra"],
        cwd=ROOT,
        env={**env, **overrides},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_make_check_tebra_passes_on_the_simulator(
    stack_env: dict[str, str], sim: Any, redis_client: redis.Redis
) -> None:
    done = make_check(stack_env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "PASS"
    steps = {line.split()[0]: line for line in lines[1:-1]}
    assert set(steps) == {"practice", "throttles", "providers", "appointments"}
    assert all(" OK " in line for line in steps.values()), lines
    assert f"{len(sim.clinic()['providers'])} providers" in steps["providers"]
    stats = sim.stats()["calls"]
    assert {
        op: stats.get(op) for op in ("GetPractices", "GetThrottles", "GetProviders", "GetAppointments")
    } == {
        "GetPractices": 1,
        "GetThrottles": 1,
        "GetProviders": 1,
        "GetAppointments": 1,
    }
    report = tebra_check.last_report(redis_client)
    assert report is not None and report["ok"] is True
    assert redis_client.hget("throttle:tebra:intervals", "GetAppointments") == "1000"  # live limits stored


@pytest.mark.parametrize("name", ["Lakeside Family Clinic, LLC", "lakeside family clinic"])
def test_a_practice_name_not_exactly_tebras_fails_naming_it(
    stack_env: dict[str, str], sim: Any, redis_client: redis.Redis, name: str
) -> None:
    done = make_check(stack_env, TEBRA_PRACTICE_NAME=name)
    assert done.returncode != 0
    verdict = done.stdout.splitlines()[-1]
    assert verdict.startswith("FAIL: ") and f'TEBRA_PRACTICE_NAME "{name}"' in verdict
    assert '"Lakeside Family Clinic"' in verdict  # the name Tebra has
    assert "GetAppointments" not in sim.stats()["calls"]  # it stopped at the practice
    report = tebra_check.last_report(redis_client)
    assert report is not None and report["ok"] is False and name in report["problem"]


def test_the_ops_api_runs_the_check_on_a_worker(
    api_server: str, worker: Any, sim: Any, redis_client: redis.Redis, auth_headers: dict[str, str]
) -> None:
    answer = requests.post(
        f"{api_server}/api/v1/ops/tebra", json={"action": "check"}, headers=auth_headers, timeout=5
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["task_id"]
    deadline = time.monotonic() + 30
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = requests.get(f"{api_server}/api/v1/ops/tebra", headers=auth_headers, timeout=5).json()["data"]
        if state["last_check"]:
            break
        time.sleep(0.2)
    assert state["last_check"] and state["last_check"]["ok"] is True, state
    assert state["throttles"]["GetAppointments"] == 1000
    assert state["credentials"]["refused"] is False


def test_workers_refresh_the_live_limits_once_a_period(
    stack_env: dict[str, str], sim: Any, redis_client: redis.Redis
) -> None:
    from config import load_settings
    from tasks.runtime import Runtime

    runtime = Runtime(load_settings({**stack_env, "TEBRA_THROTTLES_REFRESH_MINUTES": "60"}))
    for _ in range(3):
        assert runtime.gateway.get_providers()
    calls = sim.stats()["calls"]
    assert (
        calls["GetProviders"] == 3 and calls["GetThrottles"] == 1
    )  # once in the period, by whoever came first
    assert redis_client.hget("throttle:tebra:intervals", "GetPatient") == "250"
    assert 3500 <= redis_client.ttl("throttle:tebra:refreshed") <= 3600
