"""The shared Tebra throttle against a real Redis (TEST_REDIS_URL, default db 13, flushed per test)."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import time

import pytest
import redis

from config import load_settings
from tasks import keys
from tasks.tebra.throttle import PUBLISHED_INTERVALS_MS, TebraThrottle
from tests.conftest import SCRATCH_REDIS_URL as REDIS_URL


def server_now_us(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1_000_000 + int(micros)


def test_first_call_goes_now_and_the_next_waits_one_interval(r: redis.Redis) -> None:
    throttle = TebraThrottle(r, margin=0.08)
    first = throttle.reserve("GetAppointments")
    second = throttle.reserve("GetAppointments")
    assert first.wait_s == 0
    assert first.interval_s == pytest.approx(1.08)
    assert second.slot_us - first.slot_us == 1_080_000
    assert second.wait_s == pytest.approx(1.08, abs=0.05)
    # Operations are paced independently.
    assert throttle.reserve("GetPatient").wait_s == 0


def test_published_intervals_with_margin(r: redis.Redis) -> None:
    throttle = TebraThrottle(r, margin=0.1)
    for operation, ms in {"GetPatient": 250, "GetProviders": 500, "GetAllPatients": 5000}.items():
        assert PUBLISHED_INTERVALS_MS[operation] == ms
        assert throttle.reserve(operation).interval_s == pytest.approx(ms * 1.1 / 1000)


def test_live_intervals_from_get_throttles_win(r: redis.Redis) -> None:
    throttle = TebraThrottle(r, margin=0.0)
    throttle.store_intervals({"GetAppointments": 1500, "GetPatient": 300})
    assert throttle.intervals() == {"GetAppointments": 1500, "GetPatient": 300}
    assert r.ttl(keys.throttle_intervals()) > 0
    assert throttle.reserve("GetAppointments").interval_s == pytest.approx(1.5)
    assert throttle.reserve("GetProviders").interval_s == pytest.approx(0.5)  # not listed: published


def test_acquire_sleeps_the_wait_and_returns_it(r: redis.Redis) -> None:
    slept: list[float] = []
    throttle = TebraThrottle(r, margin=0.0, sleep=slept.append)
    assert throttle.acquire("GetPatient") == 0
    waited = throttle.acquire("GetPatient")
    assert slept == [waited]
    assert 0.2 < waited <= 0.25


def test_slot_keys_expire(r: redis.Redis) -> None:
    TebraThrottle(r, margin=0.0).reserve("GetPatient")
    ttl_ms = r.pttl(keys.throttle("GetPatient"))
    assert 0 < ttl_ms <= 1250 + 1000


def test_mark_called_pushes_the_next_slot(r: redis.Redis) -> None:
    throttle = TebraThrottle(r, margin=0.0)
    throttle.reserve("GetProviders")
    time.sleep(0.6)  # the slot has passed: a new call could go at once …
    throttle.mark_called("GetProviders")  # … but Tebra throttled us, so wait a full interval from now
    assert throttle.reserve("GetProviders").wait_s == pytest.approx(0.5, abs=0.05)


def test_switched_off_it_never_touches_redis() -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    throttle = TebraThrottle(unreachable, enabled=False)
    assert throttle.acquire("GetAppointments") == 0.0
    throttle.mark_called("GetAppointments")


def _worker(url: str, operation: str, count: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    client = redis.Redis.from_url(url)
    throttle = TebraThrottle(client, margin=0.08)
    for _ in range(count):
        reservation = throttle.reserve(operation)
        if reservation.wait_s > 0:
            time.sleep(reservation.wait_s)
        began_us = time.time_ns() // 1000
        out.put((os.getpid(), reservation.slot_us, began_us, reservation.interval_s))
    client.close()


def test_four_processes_share_the_pace(r: redis.Redis) -> None:
    operation, processes, per_process = "GetThrottleTestOp", 4, 8
    TebraThrottle(r).store_intervals({operation: 50})  # 54 ms with the margin: a quick test
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no Redis socket shared by fork
    out: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    workers = [
        context.Process(target=_worker, args=(REDIS_URL, operation, per_process, out))
        for _ in range(processes)
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    records = [out.get(timeout=30) for _ in range(processes * per_process)]
    for worker in workers:
        worker.join(timeout=10)
        assert worker.exitcode == 0
    elapsed = time.monotonic() - started

    assert len({pid for pid, *_ in records}) == processes
    interval_us = round(records[0][3] * 1_000_000)
    assert interval_us == 54_000
    slots = sorted(slot for _, slot, _, _ in records)
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) >= interval_us, gaps
    # Nobody started before its slot (the Redis server and this host share one clock here).
    assert all(began >= slot - 2_000 for _, slot, began, _ in records)
    # The 32 calls took at least 31 intervals end to end.
    assert elapsed >= 31 * 0.054


def test_the_absolute_margin_comes_on_top_of_the_proportional_one(r: redis.Redis) -> None:
    """Live clients saw 429s at exactly the published interval: a 1 s operation is paced 1.33 s apart."""
    settings = load_settings({"APP_ENV": "test"})
    throttle = TebraThrottle.from_settings(r, settings)
    assert settings.tebra_throttle_margin_ms == 250
    assert throttle.reserve("GetAppointments").interval_s == pytest.approx(1.0 * 1.08 + 0.25)
    assert throttle.reserve("GetPatient").interval_s == pytest.approx(0.25 * 1.08 + 0.25)
