"""The Tebra breaker across real processes: three caller processes (each the real worker runtime: gateway,
breaker, Redis) share one state in the test Redis and call the simulator over HTTP. The simulator's fault
switches make Tebra fail or slow down, and its counters show which calls really reached it.

Windows are scaled down (BREAKER_ENV) so the suite stays fast; one slow test runs the real 60 s values.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from config import Settings, load_settings
from scripts import redis_server
from tasks import events, keys
from tasks.breaker.errors import BreakerOpen, BreakerUnavailable
from tasks.breaker.glance import glance
from tasks.breaker.store import BreakerStore
from tasks.breaker.transition import Transition
from tasks.runtime import Runtime
from tests.support.processes import ROOT, free_port, wait_until

# The rules at test scale: 3 failures in 1.5 s open it for 1.5 s; p95 above 0.5 s over 20 s half-opens it.
BREAKER_ENV = {
    "APP_ENV": "test",
    "BREAKER_FAILURE_THRESHOLD": "3",
    "BREAKER_WINDOW_S": "1.5",
    "BREAKER_OPEN_S": "1.5",
    "BREAKER_LATENCY_P95_S": "0.5",
    "BREAKER_LATENCY_WINDOW_S": "20",
    "BREAKER_SAMPLE_EVERY": "10",
    "BREAKER_LATENCY_MIN_SAMPLES": "5",
    "BREAKER_HALF_RETRY_S": "0.2",
    "PATIENT_DETAILS_ENABLED": "false",
}
PROCESSES = 3


class Caller:
    """One caller process (tests/support/breaker_caller.py): send a command, read its JSON answer."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.breaker_caller"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("ab"),
            text=True,
        )

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"caller exited: {self.log.read_text(errors='replace')[-2000:]}")
        return dict(json.loads(line))

    def call(self) -> dict[str, Any]:
        self.send(op="call")
        return self.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.send(op="quit")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def breaker_env(stack_env: dict[str, str]) -> dict[str, str]:
    """The stack's environment with the breaker's windows scaled down."""
    return {**stack_env, **BREAKER_ENV}


@pytest.fixture(scope="module")
def callers(breaker_env: dict[str, str], logs_dir: Path) -> Iterator[list[Caller]]:
    """Three processes, each with the real worker runtime, sharing the breaker through the test Redis."""
    import os

    env = {**os.environ, **breaker_env, "PYTHONUNBUFFERED": "1"}
    started = [Caller(env, logs_dir / f"breaker-caller-{n}.log") for n in range(PROCESSES)]
    try:
        for caller in started:
            assert caller.read() == {"ready": True}
        yield started
    finally:
        for caller in started:
            caller.stop()


@pytest.fixture
def sim(simulator: Any, redis_client: redis.Redis) -> Any:
    """The session simulator reset (no faults, throttle off, counters zero) over a flushed Redis."""
    simulator.reset()
    simulator.set_faults(throttle=False)
    return simulator


def tebra_calls(sim: Any) -> int:
    return int(sim.stats()["calls"].get("GetProviders", 0))


def breaker_events(client: redis.Redis) -> list[dict[str, Any]]:
    entries = client.xrange(keys.AGENT_UPDATES)
    found = [events.envelope_from_entry(i, f) for i, f in entries]
    return [e["data"] for e in found if e["type"] == events.BREAKER_STATE_CHANGED]


def moves(client: redis.Redis) -> list[str]:
    return [f"{e['from']}>{e['to']}" for e in breaker_events(client)]


def open_it(callers: list[Caller], sim: Any) -> None:
    """Three upstream failures, one from each process, inside the window (after one good call: the account's
    credentials are proven, so calls are not held one at a time for the credentials' trial)."""
    assert callers[0].call()["result"] == "ok"
    sim.set_faults(internal_fault={"count": PROCESSES, "operations": ["GetProviders"]})
    assert [c.call()["result"] for c in callers] == ["upstream"] * PROCESSES


def test_the_third_failure_inside_the_window_opens_it(
    callers: list[Caller], sim: Any, redis_client: redis.Redis
) -> None:
    sim.set_faults(internal_fault={"count": 3, "operations": ["GetProviders"]})
    assert callers[0].call()["result"] == "upstream"
    assert glance(redis_client).state == "closed"
    assert callers[1].call()["result"] == "upstream"
    assert glance(redis_client).state == "closed"
    assert callers[2].call()["result"] == "upstream"

    state = redis_client.hgetall(keys.BREAKER)
    assert state["state"] == "open" and state["reason"] == "errors"
    assert {"opened_at", "last_fail", "open_until", "changed_at", "trips"} <= state.keys()
    assert float(state["open_until"]) - float(state["opened_at"]) == pytest.approx(1.5, abs=0.01)
    assert float(state["last_fail"]) == pytest.approx(float(state["opened_at"]), abs=0.01)
    assert moves(redis_client) == ["closed>open"]  # one transition, announced once

    before = tebra_calls(sim)
    refused = [c.call() for c in callers]
    assert [r["result"] for r in refused] == ["refused"] * PROCESSES
    assert all(0 < r["retry_after_s"] <= 1.5 for r in refused)
    assert tebra_calls(sim) == before  # nothing reached Tebra while open


def test_three_failures_spread_wider_than_the_window_do_not_open_it(
    callers: list[Caller], sim: Any, redis_client: redis.Redis
) -> None:
    sim.set_faults(internal_fault={"count": 3, "operations": ["GetProviders"]})
    for caller in callers:
        assert caller.call()["result"] == "upstream"
        time.sleep(0.8)  # 3 failures over > 1.6 s: never 3 inside 1.5 s
    snapshot = BreakerStore.from_settings(redis_client, load_settings(BREAKER_ENV)).snapshot()
    assert snapshot["state"] == "closed"
    assert snapshot["failures"]["in_window"] <= 2
    assert moves(redis_client) == []


def test_half_open_admits_exactly_one_trial_across_processes(
    callers: list[Caller], sim: Any, redis_client: redis.Redis
) -> None:
    open_it(callers, sim)
    time.sleep(1.6)  # the open period is over
    sim.set_faults(hang={"seconds": 1.0, "count": 1, "operations": ["GetProviders"]})  # the trial takes 1 s
    before = tebra_calls(sim)
    for caller in callers:
        caller.send(op="call")  # all three at once
    results = [caller.read() for caller in callers]
    assert sorted(r["result"] for r in results) == ["ok", "refused", "refused"], results
    assert all(r["state"] == "half" for r in results if r["result"] == "refused")
    assert tebra_calls(sim) == before + 1
    assert redis_client.hget(keys.BREAKER, "state") == "closed"  # the trial succeeded
    assert moves(redis_client) == ["closed>open", "open>half", "half>closed"]


def test_a_failed_trial_opens_it_again(callers: list[Caller], sim: Any, redis_client: redis.Redis) -> None:
    open_it(callers, sim)
    time.sleep(1.6)
    sim.set_faults(internal_fault={"count": 1, "operations": ["GetProviders"]})
    assert callers[0].call()["result"] == "upstream"
    state = redis_client.hgetall(keys.BREAKER)
    assert (state["state"], state["trips"]) == ("open", "2")
    assert moves(redis_client) == ["closed>open", "open>half", "half>open"]


def test_the_latency_rule_admits_one_call_in_ten_across_processes(
    callers: list[Caller], sim: Any, redis_client: redis.Redis
) -> None:
    sim.set_faults(latency_ms=700)  # every call 0.7 s: p95 above the 0.5 s threshold
    for _ in range(2):  # 6 slow calls (≥ 5 samples)
        for caller in callers:
            caller.send(op="call")
        assert [caller.read()["result"] for caller in callers] == ["ok"] * PROCESSES
    state = redis_client.hgetall(keys.BREAKER)
    assert (state["state"], state["reason"]) == ("half", "latency")

    before = tebra_calls(sim)
    at = time.time() + 0.3
    shares = [67, 67, 66]  # 200 attempts over the three processes, at the same time
    for caller, n in zip(callers, shares, strict=True):
        caller.send(op="burst", n=n, at=at)
    bursts = [caller.read() for caller in callers]
    admitted = sum(b["admitted"] for b in bursts)
    reached = tebra_calls(sim) - before
    ratio = admitted / 200
    print(f"latency rule: {admitted}/200 admitted (ratio {ratio:.3f}), {reached} reached Tebra, {bursts}")
    # Tolerance: ±2 calls (±1 percentage point) on the expected 20; the shared counter makes it exact.
    assert abs(admitted - 20) <= 2
    assert reached == admitted  # refused attempts never reached the simulator
    assert redis_client.hget(keys.BREAKER, "state") == "half"  # still slow: stays half-open


def test_the_latency_rule_closes_when_p95_falls_back(redis_client: redis.Redis) -> None:
    settings = Settings(
        breaker_latency_p95_s=0.5, breaker_latency_window_s=1.0, breaker_latency_min_samples=5
    )
    store = BreakerStore.from_settings(redis_client, settings)
    for n in range(5):
        store.record(f"slow{n}", failed=False, seconds=0.9)
    assert glance(redis_client).state == "half"
    time.sleep(1.1)  # the slow samples leave the window
    recorded = store.record("fast", failed=False, seconds=0.05)
    assert (recorded.state, recorded.transition) == (
        "closed",
        Transition("half", "closed", ""),
    )


def test_redis_unreachable_refuses_calls_and_never_reads_closed(
    sim: Any, breaker_env: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    server = redis_server.start(url, tmp_path / "redis")
    try:
        settings = load_settings({**breaker_env, "REDIS_URL": url, "REDIS_SOCKET_TIMEOUT_S": "0.5"})
        runtime = Runtime(settings)
        assert runtime.gateway.get_providers()  # Redis up: the call goes through
        assert runtime.breaker.snapshot()["state"] == "closed"
    finally:
        server.terminate()
        server.wait(10)
    before = tebra_calls(sim)
    for _ in range(3):
        with pytest.raises(BreakerUnavailable) as info:
            runtime.gateway.get_providers()
        assert isinstance(info.value, BreakerOpen)  # tasks defer it like an open breaker
        assert info.value.state == "unknown" and info.value.retry_after_s == 5.0
    assert tebra_calls(sim) == before  # refused before Tebra
    assert runtime.breaker.snapshot()["state"] == "unknown"
    with pytest.raises(BreakerUnavailable):
        _ = runtime.breaker.current_state  # pybreaker's own reading raises instead of falling back to closed
    unreachable = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(unreachable) == 1  # logged once per outage, not once per refused call


@pytest.mark.slow(seconds=70)
@pytest.mark.timeout(200)
def test_the_real_sixty_second_values(sim: Any, stack_env: dict[str, str], redis_client: redis.Redis) -> None:
    settings = load_settings({**stack_env, "PATIENT_DETAILS_ENABLED": "false"})
    assert (settings.breaker_window_s, settings.breaker_open_s, settings.breaker_failure_threshold) == (
        60.0,
        60.0,
        3,
    )
    runtime = Runtime(settings)
    sim.set_faults(internal_fault={"count": 3, "operations": ["GetProviders"]})
    for _ in range(3):
        with pytest.raises(Exception, match="InternalServiceFault"):
            runtime.gateway.get_providers()
        time.sleep(5)  # 3 failures over 10 s: inside the 60 s window
    opened_at = float(redis_client.hget(keys.BREAKER, "opened_at"))
    assert redis_client.hget(keys.BREAKER, "state") == "open"
    before = tebra_calls(sim)
    time.sleep(max(0.0, opened_at + 55 - time.time()))
    with pytest.raises(BreakerOpen) as info:
        runtime.gateway.get_providers()  # 55 s in: still open
    assert info.value.retry_after_s is not None and 0 < info.value.retry_after_s <= 5.5
    assert tebra_calls(sim) == before
    wait_until(lambda: time.time() > opened_at + 60.2, 10, "open period")
    assert runtime.gateway.get_providers()  # the trial, after 60 s
    assert redis_client.hget(keys.BREAKER, "state") == "closed"
    assert tebra_calls(sim) == before + 1
