"""Coalesced syncs: a full sync takes the queued days after it into its one GetAppointments.

The days are queued the way the API queues them (tasks/sync/request.py) before a worker of one process
starts, so which task takes which day is certain: the first takes the next six calendar days, the next
queued day left starts the next fetch. Its own broker (in the test's data database, as in
test_throttle_burst) keeps the session worker away. What is asserted is what the simulator answered and
what reached Redis: one call per week, and for every day its own rows, its own ``schedule_synced`` under the
task id the API gave it, its status, its result entry and its lock released, exactly as a day synced alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date as date_type
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from config import Settings, load_settings
from tasks import keys
from tasks.celery_factory import create_celery
from tasks.sync import lifecycle
from tasks.sync.request import request_sync
from tasks.sync.status import read_status, read_task
from tests.conftest import TEST_REDIS_URL
from tests.integration.tebra_flow import events_of
from tests.support.processes import free_port, start_worker, stop, wait_until


def days_from_monday(count: int, weeks_ahead: int = 3) -> list[str]:
    """``count`` calendar days in a row from a Monday a few weeks ahead (weekends included: a clinic closed
    at weekends has no rows then, which a fetch must store as such)."""
    today = date_type.today()
    monday = today - timedelta(days=today.weekday()) + timedelta(weeks=weeks_ahead)
    return [(monday + timedelta(days=n)).isoformat() for n in range(count)]


@pytest.fixture
def own_env(stack_env: dict[str, str]) -> dict[str, str]:
    return {
        **stack_env,
        "CELERY_BROKER_URL": TEST_REDIS_URL,
        "CELERY_RESULT_BACKEND": TEST_REDIS_URL,
        "PATIENT_DETAILS_ENABLED": "false",
        "WORKER_METRICS_PORT": str(free_port()),
    }


@pytest.fixture
def queue_days(own_env: dict[str, str], redis_client: redis.Redis) -> Iterator[Any]:
    settings = load_settings(own_env)
    app = create_celery(settings, main="coalesce-test")

    def queue(days: list[str]) -> dict[str, str]:
        return {
            day: request_sync(redis_client, app, settings, day, requested_by="test").task_id for day in days
        }

    yield queue
    app.close()


def run_worker(own_env: dict[str, str], tmp_path: Path) -> Any:
    return start_worker(own_env, tmp_path / "coalesce-worker.log", name="coalesce-worker", concurrency=1)


def wait_finished(client: redis.Redis, days: list[str], timeout: float = 30) -> None:
    def finished() -> bool:
        states = [client.hget(keys.sync_status(day), "state") for day in days]
        return all(state in ("succeeded", "failed") for state in states)

    wait_until(finished, timeout, "every day finished")


def test_days_in_a_row_share_one_fetch_and_each_is_its_own_sync(
    own_env: dict[str, str], queue_days: Any, sim: Any, redis_client: redis.Redis, tmp_path: Path
) -> None:
    settings: Settings = load_settings(own_env)
    days = days_from_monday(10)  # Monday to the Wednesday after: a week's fetch, then three days
    task_ids = queue_days(days)
    worker = run_worker(own_env, tmp_path)
    try:
        wait_finished(redis_client, days)
    finally:
        stop(worker)

    assert sim.stats()["calls"]["GetAppointments"] == 2  # not ten
    # The taken days' own messages were revoked: the worker dropped them before any pool process ran them.
    assert "Discarding revoked task" in (tmp_path / "coalesce-worker.log").read_text()
    first, second = task_ids[days[0]], task_ids[days[7]]
    for n, day in enumerate(days):
        task_id = task_ids[day]
        runner = first if n < 7 else second
        expected = sorted(str(a["id"]) for a in sim.appointments(day))
        status = read_status(redis_client, day) or {}
        assert status["state"] == "succeeded" and status["task_id"] == task_id, (day, status)
        assert status["mode"] == "full"
        assert status["counts"]["appointments"] == len(expected), (day, status["counts"])
        assert sorted(redis_client.hkeys(keys.appointments(day))) == expected, day
        assert redis_client.scard(keys.patients_index(day)) == len(
            {a["patient_id"] for a in sim.appointments(day)}
        )
        assert redis_client.get(keys.sync_lock(day)) is None, day  # released for the next request
        synced = events_of(redis_client, "schedule_synced", day)
        assert [e["data"]["task_id"] for e in synced] == [task_id], day  # once, under its own id
        started = events_of(redis_client, "schedule_sync_started", day)
        assert [e["data"]["task_id"] for e in started] == [task_id], day
        if task_id != runner:
            assert synced[0]["data"]["run_by"] == runner and started[0]["data"]["run_by"] == runner
            assert read_task(redis_client, task_id)["run_by"] == runner  # type: ignore[index]
        else:
            assert "run_by" not in synced[0]["data"]
    weekend = [day for day in days if date_type.fromisoformat(day).weekday() >= 5]
    assert weekend and all(not sim.appointments(day) for day in weekend)  # stored as empty days, not skipped
    results = {fields["task_id"]: fields for _, fields in redis_client.xrange(keys.TASK_RESULTS)}
    assert set(results) == set(task_ids.values())
    assert json.loads(results[first]["summary"])["also_synced"] == days[1:7]
    assert settings.sync_coalesce_days == 7


def test_a_failed_fetch_retries_every_day_it_took(
    own_env: dict[str, str], queue_days: Any, sim: Any, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Tebra fails the week's call once: every day it took goes ``retrying`` with it, and the retry (the
    same task, taking the same days again) syncs them all, each announced once."""
    days = days_from_monday(5, weeks_ahead=5)
    sim.set_faults(internal_fault={"count": 1, "operations": ["GetAppointments"]})
    task_ids = queue_days(days)
    worker = run_worker(own_env, tmp_path)
    try:
        wait_until(
            lambda: redis_client.hget(keys.sync_status(days[-1]), "state") == "retrying", 20, "the retry"
        )
        retrying = {day: redis_client.hget(keys.sync_status(day), "state") for day in days}
        wait_finished(redis_client, days)
    finally:
        stop(worker)

    assert set(retrying.values()) <= {"retrying", "succeeded"}, retrying  # all waited with the first
    assert sim.stats()["calls"]["GetAppointments"] == 2  # the failed call and its retry: one per attempt
    for day in days:
        assert redis_client.hget(keys.sync_status(day), "state") == "succeeded"
        assert [e["data"]["task_id"] for e in events_of(redis_client, "schedule_synced", day)] == [
            task_ids[day]
        ]
        assert redis_client.get(keys.sync_lock(day)) is None


def test_a_day_already_running_is_left_to_its_own_task(
    own_env: dict[str, str], queue_days: Any, sim: Any, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """A day in the window whose own task is already running elsewhere is not taken: the fetch only skips
    it (its rows are dropped), and the days around it are synced once each."""
    days = days_from_monday(5, weeks_ahead=7)
    wednesday = days[2]
    # Wednesday's own task has started in another worker: its lock and status say so (no message here).
    other = "01OTHERWORKERTASK000000000"
    redis_client.set(keys.sync_lock(wednesday), other, ex=600)
    lifecycle.record(redis_client, wednesday, other, 3600, state="running", run_by=other)
    task_ids = queue_days([day for day in days if day != wednesday])
    worker = run_worker(own_env, tmp_path)
    try:
        wait_finished(redis_client, [day for day in days if day != wednesday])
    finally:
        stop(worker)
    assert sim.stats()["calls"]["GetAppointments"] == 1  # Monday's fetch took Tuesday, Thursday and Friday
    status = read_status(redis_client, wednesday) or {}
    assert status["state"] == "running" and status["run_by"] == other  # untouched: still its own task's
    assert not events_of(redis_client, "schedule_synced", wednesday)
    assert not redis_client.exists(keys.appointments(wednesday))
    for day in days:
        if day != wednesday:
            assert [e["data"]["task_id"] for e in events_of(redis_client, "schedule_synced", day)] == [
                task_ids[day]
            ]
