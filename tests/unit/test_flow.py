"""The patient-flow state machine and Tebra's ConfirmationStatus mapping."""

from __future__ import annotations

import itertools

import pytest

from tasks.patients import flow


def test_the_main_path_is_walkable_in_order() -> None:
    for current, following in itertools.pairwise(flow.MAIN_PATH):
        assert following in flow.allowed_next(current)
        assert flow.can_transition(current, following)
        assert flow.rank(following) > flow.rank(current)


def test_cancel_no_show_reschedule_only_before_arrival() -> None:
    for state in flow.ENDED_BEFORE_ARRIVAL:
        assert flow.can_transition(flow.SCHEDULED, state)
        assert flow.can_transition(flow.CONFIRMED, state)
        for later in flow.MAIN_PATH[2:]:
            assert not flow.can_transition(later, state)


def test_no_backwards_moves_and_terminal_states() -> None:
    assert not flow.can_transition(flow.WITH_DOCTOR, flow.ARRIVED)
    assert not flow.can_transition(flow.ARRIVED, flow.ARRIVED)
    assert flow.can_transition(flow.SCHEDULED, flow.ARRIVED)  # confirming is optional
    assert not flow.can_transition(flow.ARRIVED, flow.WITH_DOCTOR)  # no skipping once in the clinic
    for state in flow.TERMINAL:
        assert flow.allowed_next(state) == []
    assert not flow.can_transition("bogus", flow.ARRIVED)
    with pytest.raises(flow.UnknownState):
        flow.allowed_next("Arrived")
    with pytest.raises(flow.UnknownState):
        flow.rank("checked-in")


def test_every_state_has_a_rank_and_an_entry() -> None:
    assert set(flow.RANKS) == set(flow.STATES) == set(flow._NEXT)
    assert len(flow.STATES) == 11


def test_ended_before_arrival_ranks_between_confirmed_and_arrived() -> None:
    for state in flow.ENDED_BEFORE_ARRIVAL:
        assert flow.rank(flow.CONFIRMED) < flow.rank(state) < flow.rank(flow.ARRIVED)


@pytest.mark.parametrize(
    ("local", "remote", "expected"),
    [
        (None, "confirmed", "confirmed"),
        ("scheduled", "confirmed", "confirmed"),
        ("with-doctor", "confirmed", "with-doctor"),  # never backwards past what the clinic set
        ("arrived", "cancelled", "arrived"),
        ("confirmed", "cancelled", "cancelled"),
        ("no-show", "arrived", "arrived"),  # a late arrival
        ("no-show", "cancelled", "cancelled"),  # equal rank: Tebra's latest word
        ("appt-prep", "completed", "completed"),
    ],
)
def test_merge_synced(local: str | None, remote: str, expected: str) -> None:
    assert flow.merge_synced(local, remote) == expected


def test_timestamps_on_entry() -> None:
    assert flow.timestamp_field(flow.ARRIVED) == "checkin_time"
    assert flow.timestamp_field(flow.WITH_DOCTOR) == "with_doctor_time"
    assert flow.timestamp_field(flow.COMPLETED) == "completed_time"
    assert flow.timestamp_field(flow.CONFIRMED) is None
    assert flow.TIMESTAMP_FIELDS is flow.TIMESTAMP_ON_ENTRY


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("Scheduled", "scheduled"),
        ("Confirmed", "confirmed"),
        ("Check-in", "arrived"),
        ("CheckedIn", "arrived"),
        ("checked in", "arrived"),
        ("CHECK IN", "arrived"),
        ("Roomed", "appt-prep"),
        ("ReadyToBeSeen", "ready-for-md"),
        ("Ready To Be Seen", "ready-for-md"),
        ("Check-out", "completed"),
        ("CheckedOut", "completed"),
        ("Cancelled", "cancelled"),
        ("No-show", "no-show"),
        ("NoShow", "no-show"),
        ("no show", "no-show"),
        ("Rescheduled", "rescheduled"),
        ("  confirmed ", "confirmed"),
    ],
)
def test_flow_status_from_tebra(raw: str, state: str) -> None:
    assert flow.flow_status_from_tebra(raw) == (state, True)


@pytest.mark.parametrize("raw", [None, "", "Unknown", "NeedsReschedule", "Waitlisted"])
def test_unknown_tebra_status_is_scheduled_and_flagged(raw: str | None) -> None:
    assert flow.flow_status_from_tebra(raw) == ("scheduled", False)
