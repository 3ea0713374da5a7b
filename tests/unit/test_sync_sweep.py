"""The sweep's decisions on a real Redis: which days it checks, when it sends one again, what it remembers.

The broker's side is given as the set of task ids it holds, and resending is recorded, not sent: the whole
path through a real broker and worker is tests/integration/test_sync_sweep.py.
"""

from __future__ import annotations

import time

import redis

from tasks import keys
from tasks.sync import lifecycle, sweep

DAY = "2026-03-02"
OTHER_DAY = "2026-03-03"
INTERVAL_S = 60.0
LIMIT_S = 150.0


def accept(client: redis.Redis, date: str, task_id: str) -> None:
    """A sync accepted as the API accepts one (claimed, queued), its message not sent."""
    lifecycle.claim(client, date, task_id, lock_ttl_s=600, status_ttl_s=3600, requested_by="test")


class Resends:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def __call__(self, date: str, task_id: str) -> None:
        self.sent.append((date, task_id))


def run(client: redis.Redis, held: set[str], resend: Resends, now: float) -> sweep.SweepReport:
    return sweep.sweep(client, lambda: held, resend, interval_s=INTERVAL_S, running_limit_s=LIMIT_S, now=now)


def test_a_lost_message_is_noted_then_sent_again_one_interval_later(redis_client: redis.Redis) -> None:
    accept(redis_client, DAY, "task-a")
    resend = Resends()
    now = time.time()

    first = run(redis_client, set(), resend, now)
    assert (first.checked, first.missing, first.resent) == (1, (DAY,), ())
    assert resend.sent == []
    # within the interval: still only noted (a message between its pop and its unacked record looks lost)
    assert run(redis_client, set(), resend, now + INTERVAL_S - 1).resent == ()

    second = run(redis_client, set(), resend, now + INTERVAL_S)
    assert second.resent == (DAY,)
    assert resend.sent == [(DAY, "task-a")]
    assert redis_client.hget(keys.task_meta("task-a"), "resends") == "1"
    # the day is untouched: same state, lock and task id
    assert redis_client.hget(keys.sync_status(DAY), "state") == lifecycle.QUEUED
    assert redis_client.get(keys.sync_lock(DAY)) == "task-a"
    assert not redis_client.exists(keys.SYNC_SWEEP)


def test_a_message_the_broker_holds_is_never_sent_again(redis_client: redis.Redis) -> None:
    accept(redis_client, DAY, "task-a")
    resend = Resends()
    now = time.time()
    for step in range(4):
        report = run(redis_client, {"task-a"}, resend, now + step * INTERVAL_S)
        assert report.checked == 1 and report.missing == () and report.resent == ()
    assert resend.sent == []


def test_a_message_found_again_is_forgotten(redis_client: redis.Redis) -> None:
    """Missing once, then held (it was between its pop and its unacked record): the note goes, and a later
    miss starts counting from scratch."""
    accept(redis_client, DAY, "task-a")
    resend = Resends()
    now = time.time()
    run(redis_client, set(), resend, now)
    run(redis_client, {"task-a"}, resend, now + INTERVAL_S)
    assert not redis_client.exists(keys.SYNC_SWEEP)
    assert run(redis_client, set(), resend, now + 2 * INTERVAL_S).missing == (DAY,)
    assert resend.sent == []


def test_finished_unlocked_and_taken_days_are_not_checked(redis_client: redis.Redis) -> None:
    # finished: its lock released
    accept(redis_client, DAY, "task-done")
    lifecycle.record(redis_client, DAY, "task-done", 3600, state=lifecycle.SUCCEEDED)
    lifecycle.release(redis_client, DAY, "task-done")
    # taken into another task's fetch (a coalesced sync): that task's own day is what is checked
    accept(redis_client, OTHER_DAY, "task-b")
    lifecycle.record(redis_client, OTHER_DAY, "task-b", 3600, state=lifecycle.RUNNING, run_by="task-a")
    assert sweep.pending_days(redis_client) == []
    # a lock whose holder is not the day's task (the status was written by a newer request)
    redis_client.set(keys.sync_lock(DAY), "task-stale")
    assert sweep.pending_days(redis_client) == []


def test_a_queued_days_old_run_by_does_not_hide_it(redis_client: redis.Redis) -> None:
    lifecycle.record(redis_client, DAY, "task-old", 3600, state=lifecycle.SUCCEEDED, run_by="task-old")
    accept(redis_client, DAY, "task-new")
    assert [(d.date, d.task_id, d.state) for d in sweep.pending_days(redis_client)] == [
        (DAY, "task-new", lifecycle.QUEUED)
    ]


def test_a_running_sync_is_sent_again_only_after_its_time_limit(redis_client: redis.Redis) -> None:
    """A running task whose message is gone may still be running in a worker until its hard time limit."""
    accept(redis_client, DAY, "task-a")
    started = time.time()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(started))
    lifecycle.record(redis_client, DAY, "task-a", 3600, state=lifecycle.RUNNING, started_at=started_at)
    resend = Resends()
    run(redis_client, set(), resend, started + 1)
    assert run(redis_client, set(), resend, started + 1 + INTERVAL_S).resent == ()
    assert run(redis_client, set(), resend, started + LIMIT_S + 1).resent == (DAY,)
    assert resend.sent == [(DAY, "task-a")]


def test_one_sweep_an_interval(redis_client: redis.Redis) -> None:
    assert sweep.take_turn(redis_client, 2)
    assert not sweep.take_turn(redis_client, 2)
    time.sleep(1.6)  # the lease is the interval less half a second: the next tick on time gets it
    assert sweep.take_turn(redis_client, 2)
