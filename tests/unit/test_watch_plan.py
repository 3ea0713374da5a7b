"""The watch's plan (due or not, full or incremental, from when) and the Tebra clock bounds, as pure
functions: no clock of the machine is read, so they hold on any day at any hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from config import load_settings
from tasks.events import iso_utc
from tasks.sync import clock
from tasks.sync.watch import SKIPPED_NOT_DUE, SKIPPED_OFF, SKIPPED_WAITING, horizon, interval_s, plan_poll

SETTINGS = load_settings({"APP_ENV": "test", "CLINIC_TZ": "America/Chicago", "CLINIC_HOURS": "07:00-19:00"})
# Tuesday 2026-03-03, 10:00 in Chicago (16:00 UTC): inside clinic hours.
IN_HOURS = datetime(2026, 3, 3, 16, 0, tzinfo=UTC)
# The same Tuesday, 22:00 in Chicago: outside them.
OFF_HOURS = datetime(2026, 3, 4, 4, 0, tzinfo=UTC)


def state(**moments: datetime) -> dict[str, str]:
    return {name: iso_utc(moment) for name, moment in moments.items()}


def test_the_interval_follows_clinic_hours_in_the_clinic_zone() -> None:
    assert interval_s(SETTINGS, IN_HOURS) == 300
    assert interval_s(SETTINGS, OFF_HOURS) == 3600


def test_the_horizon_is_today_through_today_plus_the_setting_in_clinic_time() -> None:
    days = horizon(SETTINGS, OFF_HOURS)  # 04:00 UTC on the 4th is still the 3rd in Chicago
    assert days[0] == "2026-03-03" and days[-1] == "2026-03-17" and len(days) == 15


def test_the_first_poll_and_a_stale_full_read_are_full() -> None:
    assert plan_poll({}, SETTINGS, IN_HOURS, force=False, allowance_s=0) == (None, None)
    old_full = state(cursor=IN_HOURS - timedelta(minutes=5), last_started_at=IN_HOURS - timedelta(minutes=5),
                     last_full_started_at=IN_HOURS - timedelta(minutes=61))  # fmt: skip
    assert plan_poll(old_full, SETTINGS, IN_HOURS, force=False, allowance_s=0) == (None, None)


def test_an_unknown_clock_means_a_full_read() -> None:
    recent = state(cursor=IN_HOURS - timedelta(minutes=5), last_started_at=IN_HOURS - timedelta(minutes=5),
                   last_full_started_at=IN_HOURS - timedelta(minutes=10))  # fmt: skip
    assert plan_poll(recent, SETTINGS, IN_HOURS, force=False, allowance_s=None) == (None, None)


def test_an_incremental_poll_starts_before_the_cursor_by_the_overlap_and_the_lag() -> None:
    cursor = IN_HOURS - timedelta(minutes=5)
    recent = state(
        cursor=cursor, last_started_at=cursor, last_full_started_at=IN_HOURS - timedelta(minutes=10)
    )
    skip, since = plan_poll(recent, SETTINGS, IN_HOURS, force=False, allowance_s=7200)
    assert skip is None and since == cursor - timedelta(seconds=300 + 7200)


@pytest.mark.parametrize(
    ("now", "ago_s", "due"),
    [(IN_HOURS, 200, False), (IN_HOURS, 290, True), (OFF_HOURS, 600, False), (OFF_HOURS, 3590, True)],
)
def test_a_tick_polls_only_when_due(now: datetime, ago_s: int, due: bool) -> None:
    last = now - timedelta(seconds=ago_s)
    recent = state(cursor=last, last_started_at=last, last_full_started_at=last)
    skip, _ = plan_poll(recent, SETTINGS, now, force=False, allowance_s=0)
    assert (skip is None) is due and (due or skip == SKIPPED_NOT_DUE)


def test_the_breaker_sets_when_to_come_back_and_zero_turns_it_off() -> None:
    waiting = {"not_before": iso_utc(IN_HOURS + timedelta(seconds=30))}
    assert plan_poll(waiting, SETTINGS, IN_HOURS, force=False, allowance_s=0)[0] == SKIPPED_WAITING
    off = load_settings({"APP_ENV": "test", "TEBRA_POLL_INTERVAL_S": "0"})
    assert plan_poll({}, off, IN_HOURS, force=True, allowance_s=0)[0] == SKIPPED_OFF


def test_clock_bounds_from_changes() -> None:
    ended = datetime(2026, 3, 3, 16, 0, 30, tzinfo=UTC)
    # Stamped two hours behind: a change made a few seconds before the read ended reads 08:00:20 in Chicago.
    changes = [("2026-03-03T08:00:20-06:00", "2026-03-03T15:55:00Z")]
    measured = clock.bounds(ended, changes)
    assert measured.behind_max_s == pytest.approx(7210)
    assert measured.behind_min_s == pytest.approx(7200 - 20 - 300 + 0, abs=1)  # was current at 15:55 UTC
    assert measured.allowance_s == pytest.approx(7210)
    assert clock.bounds(ended, []).allowance_s is None
    ahead = clock.bounds(ended, [("2026-03-03T11:00:00-06:00", "2026-03-03T15:55:00Z")])
    assert ahead.allowance_s == 0.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SYNC_HORIZON_DAYS": "31"}, "SYNC_HORIZON_DAYS"),
        ({"TEBRA_POLL_INTERVAL_S": "4"}, "TEBRA_POLL_INTERVAL_S"),
        ({"TEBRA_POLL_INTERVAL_S": "3601"}, "TEBRA_POLL_INTERVAL_S"),
        ({"CLINIC_HOURS": "19:00-07:00"}, "CLINIC_HOURS"),
        ({"CLINIC_HOURS": "seven to seven"}, "CLINIC_HOURS"),
        ({"FULL_RECONCILE_MINUTES": "0"}, "FULL_RECONCILE_MINUTES"),
    ],
)
def test_bad_watch_settings_are_refused_by_name(env: dict[str, str], message: str) -> None:
    from config import SettingsError

    with pytest.raises(SettingsError, match=message):
        load_settings({"APP_ENV": "test", **env})
