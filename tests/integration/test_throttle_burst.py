"""50 syncs queued at once against a throttling simulator, run by a separate prefork worker of 4 processes.

The simulator enforces Tebra's published intervals (GetAppointments 1000 ms, GetPatient 250 ms …) and counts
every call that breaks one. The worker paces each operation through the shared Redis throttle
(TEBRA_THROTTLE_MARGIN above the interval). With patient details on, the same 4 processes also take the
``details`` queue: the test shows lookups do not slow the day syncs (the worker takes ``sync`` first).

The days are a week apart, so each is its own GetAppointments. Asserted: zero throttle violations on any
operation; GetAppointments accepted at ≥ 97 % of the pace the throttle keeps (1.33 s a call with the default
margins: from the simulator's accepted-call timestamps), so the 50 ``schedule_synced`` events arrive that far
apart. The burst worker has its broker
in the test's data database (``TEST_REDIS_URL``) so that the session worker, on ``TEST_BROKER_URL``, never
takes its tasks.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from config import Settings, load_settings
from tasks.celery_factory import create_celery
from tasks.sync.request import request_sync
from tests.conftest import TEST_REDIS_URL
from tests.integration.tebra_flow import CLINIC_TZ, events_of
from tests.support.processes import free_port, start_worker, stop
from tests.support.simulator import Simulator, start_simulator

SYNCS = 50
CONCURRENCY = 4
# Each GetAppointments is paced at 1 s * (1 + TEBRA_THROTTLE_MARGIN) + TEBRA_THROTTLE_MARGIN_MS: the burst
# must run at nearly that pace (97 % of it), never faster than Tebra's 1 s.
PACED_S = 1.0 * (1 + Settings.tebra_throttle_margin) + Settings.tebra_throttle_margin_ms / 1000
MIN_RATE_SHARE = 0.97 / PACED_S


def weeks_back(count: int) -> list[str]:
    """``count`` weekdays a week apart before today (the simulator books weekdays), newest first: days
    further apart than SYNC_COALESCE_DAYS, so each is its own GetAppointments (a run of days in a row would
    share one call, which tests/integration/test_coalesced_sync.py covers)."""
    day = datetime.now(CLINIC_TZ).date() - timedelta(days=1)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return [(day - timedelta(weeks=n)).isoformat() for n in range(count)]


@pytest.fixture
def throttling_sim(tmp_path: Path) -> Iterator[Simulator]:
    """A simulator of the test's own with Tebra's throttle on (every operation at its published interval)."""
    with start_simulator(throttle=True, log_dir=tmp_path) as sim:
        yield sim


@pytest.fixture
def burst_env(base_env: dict[str, str], throttling_sim: Simulator) -> dict[str, str]:
    return {
        **base_env,
        "CELERY_BROKER_URL": TEST_REDIS_URL,
        "CELERY_RESULT_BACKEND": TEST_REDIS_URL,
        "TEBRA_WSDL_URL": throttling_sim.wsdl_url,
        "TEBRA_THROTTLE_ENABLED": "true",
        "PATIENT_DETAILS_ENABLED": "true",
        "WORKER_METRICS_PORT": str(free_port()),
    }


@pytest.fixture
def burst_worker(burst_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path) -> Iterator[Any]:
    """A prefork worker subprocess, 4 processes, consuming sync and details from its own broker."""
    log = tmp_path / "burst-worker.log"
    proc = start_worker(burst_env, log, name="burst-worker", concurrency=CONCURRENCY)
    yield proc
    stop(proc)


@pytest.mark.slow(seconds=65)
def test_fifty_syncs_at_once_never_break_the_throttle_and_keep_its_pace(
    burst_env: dict[str, str],
    burst_worker: Any,
    throttling_sim: Simulator,
    redis_client: redis.Redis,
) -> None:
    settings = load_settings(burst_env)
    app = create_celery(settings, main="burst-test")
    dates = weeks_back(SYNCS)
    queued_at = time.monotonic()
    for date in dates:
        assert not request_sync(redis_client, app, settings, date, requested_by="test").deduplicated

    deadline = time.monotonic() + SYNCS * 1.1 * 1.5 + 30
    synced: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        synced = events_of(redis_client, "schedule_synced")
        if len(synced) >= SYNCS or events_of(redis_client, "schedule_sync_failed"):
            break
        time.sleep(0.25)
    elapsed = time.monotonic() - queued_at
    stats = throttling_sim.stats()
    app.close()

    assert not events_of(redis_client, "schedule_sync_failed")
    assert sorted(e["data"]["date"] for e in synced) == sorted(dates), (
        f"{len(synced)} of {SYNCS} in {elapsed:.1f}s"
    )
    assert stats["throttle_violations"] == 0, stats["throttled"]

    accepted = sorted(stats["accepted_at"]["GetAppointments"])
    assert len(accepted) == SYNCS  # one call per day, none repeated
    span = accepted[-1] - accepted[0]
    rate_share = (len(accepted) - 1) / span  # allowed: one call per 1.000 s
    gaps = [b - a for a, b in itertools.pairwise(accepted)]
    event_times = sorted(datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp() for e in synced)
    event_gaps = [b - a for a, b in itertools.pairwise(event_times)]
    patients = stats["accepted"].get("GetPatient", 0)
    print(
        f"\nburst: {SYNCS} syncs in {elapsed:.1f}s; GetAppointments at {rate_share:.1%} of the allowed rate "
        f"(min gap {min(gaps):.3f}s, median {statistics.median(gaps):.3f}s); schedule_synced median gap "
        f"{statistics.median(event_gaps):.3f}s; GetPatient accepted meanwhile: {patients}; "
        f"violations: {stats['throttle_violations']}"
    )
    assert min(gaps) >= 1.0
    assert rate_share >= MIN_RATE_SHARE
    assert 0.83 * PACED_S <= statistics.median(event_gaps) <= 1.2 * PACED_S
