"""The start script of a sync (tasks/sync/lifecycle.py ``start``) against a real Redis: which days a task
takes into its fetch, and when it must not run at all. TEST_REDIS_URL (default db 13 here), flushed per
test."""

from __future__ import annotations

import redis

from tasks import keys
from tasks.sync import lifecycle
from tasks.sync.status import read_status

NOW = "2026-11-26T12:00:00.000Z"
HOUR_AGO = "2026-11-26T11:00:00.000Z"  # the oldest last full sync a day may have and be synced incrementally
DAYS = ["2026-12-07", "2026-12-08", "2026-12-09", "2026-12-10"]


def queued(r: redis.Redis, day: str, task_id: str, **fields: str) -> None:
    """A day as the API leaves it: its lock held by ``task_id``, its status queued under it."""
    r.set(keys.sync_lock(day), task_id, ex=600)
    lifecycle.record(r, day, task_id, 3600, state=lifecycle.QUEUED, **fields)


def start(r: redis.Redis, task_id: str, day: str = DAYS[0]) -> lifecycle.Start:
    following = DAYS[DAYS.index(day) + 1 :]
    return lifecycle.start(
        r, day, task_id, 3600, started_at=NOW, attempt=0, full_before=HOUR_AGO, following=following
    )


def test_takes_the_queued_days_that_follow_under_their_own_task_ids(r: redis.Redis) -> None:
    for n, day in enumerate(DAYS):
        queued(r, day, f"task-{n}")
    begun = start(r, "task-0")
    assert begun.outcome == lifecycle.STARTED
    assert begun.days == (("2026-12-08", "task-1"), ("2026-12-09", "task-2"), ("2026-12-10", "task-3"))
    for n, day in enumerate(DAYS):
        status = read_status(r, day) or {}
        assert status["state"] == "running" and status["run_by"] == "task-0"
        assert status["task_id"] == f"task-{n}"  # each day keeps the id the API gave it
    # Their own tasks, arriving later, learn that task-0 runs their day: they do not run it again.
    assert start(r, "task-2", DAYS[2]) == lifecycle.Start(lifecycle.TAKEN, by="task-0")


def test_leaves_days_that_are_not_queued_under_their_lock_holder(r: redis.Redis) -> None:
    queued(r, DAYS[0], "task-0")
    queued(r, DAYS[1], "task-1")
    lifecycle.record(r, DAYS[1], "task-1", 3600, state="running", run_by="task-1")  # its own task runs it
    r.set(keys.sync_lock(DAYS[2]), "newer", ex=600)
    lifecycle.record(r, DAYS[2], "older", 3600, state=lifecycle.QUEUED)  # lock and status disagree
    lifecycle.record(r, DAYS[3], "done", 3600, state=lifecycle.SUCCEEDED)  # no lock: nothing queued
    assert start(r, "task-0").days == ()
    assert (read_status(r, DAYS[1]) or {})["run_by"] == "task-1"


def test_an_incremental_day_fetches_alone_and_recent_days_are_not_taken(r: redis.Redis) -> None:
    recent = {
        "last_success_started_at": "2026-11-26T11:30:00.000Z",
        "last_full_started_at": "2026-11-26T11:30:00.000Z",
    }
    queued(r, DAYS[0], "task-0", **recent)
    queued(r, DAYS[1], "task-1")
    begun = start(r, "task-0")
    assert begun.days == () and begun.last_full_started_at == recent["last_full_started_at"]
    queued(r, DAYS[2], "task-2", **recent)  # due an incremental sync: its own task asks for its changes
    queued(r, DAYS[3], "task-3")
    assert start(r, "task-1", DAYS[1]).days == (("2026-12-10", "task-3"),)


def test_a_task_takes_again_the_days_it_took_before_and_knows_when_it_is_done(r: redis.Redis) -> None:
    for n, day in enumerate(DAYS):
        queued(r, day, f"task-{n}")
    first = start(r, "task-0")
    for day, task_id in [(DAYS[0], "task-0"), *first.days]:
        lifecycle.record(r, day, task_id, 3600, state=lifecycle.RETRYING)  # the fetch failed: retry
    assert start(r, "task-0").days == first.days  # the retry (or a redelivery) takes the same days
    lifecycle.record(r, DAYS[0], "task-0", 3600, state=lifecycle.SUCCEEDED)
    assert start(r, "task-0") == lifecycle.Start(lifecycle.DONE)  # delivered again after it finished
