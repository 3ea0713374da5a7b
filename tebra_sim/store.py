"""What the simulator holds right now: the seeded schedule plus the edits made at run time.

Edits (status change, cancel, reschedule, add) are kept as whole appointments keyed by id, laid over the
seeded days; a reset drops them. Every edit moves LastModifiedDate to the practice's "now", which is what an
incremental sync (FromLastModifiedDate/ToLastModifiedDate) looks for.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date, datetime, timedelta

from tebra_sim.clinic import ADDED_ID_BASE, STATUSES, Appointment, Clinic, seeded_day_of


class EditError(ValueError):
    """An edit the simulator cannot apply (unknown id, patient or provider, bad status)."""


class AppointmentStore:
    """Thread-safe: the server is threaded and the admin API edits while SOAP calls read."""

    def __init__(self, clinic: Clinic, now: Callable[[], datetime]) -> None:
        self.clinic = clinic
        self._now = now
        self._lock = threading.Lock()
        self._edits: dict[int, Appointment] = {}
        self._deleted: set[int] = set()  # ids Tebra no longer has (a deletion leaves no row to modify)
        self._next_added = itertools.count(ADDED_ID_BASE + 1)
        # Seeded days are immutable, so a cache of them is safe to share between threads.
        self._seeded = functools.lru_cache(maxsize=512)(self._seeded_day)
        # The seed books days ahead "created and last touched before the day began", which for a day in the
        # future is a moment still to come. Real Tebra never stamps a row later than the moment it is read
        # (its clock aside): a seeded stamp is capped an hour before the simulator started, so that only
        # run-time edits are "recent".
        self._started = now() - timedelta(hours=1)

    def _seeded_day(self, day: date) -> list[Appointment]:
        return [_stamped_by(row, self._started) for row in self.clinic.appointments_on(day)]

    def reset(self) -> None:
        with self._lock:
            self._edits.clear()
            self._deleted.clear()
            self._next_added = itertools.count(ADDED_ID_BASE + 1)

    def day(self, day: date) -> list[Appointment]:
        """Every appointment starting on ``day`` (practice-local), edits applied, by start time."""
        with self._lock:
            edits = dict(self._edits)
            deleted = set(self._deleted)
        rows = [edits.get(row.id, row) for row in self._seeded(day)]
        seen = {row.id for row in rows}
        rows.extend(row for row in edits.values() if row.id not in seen)
        return sorted(
            (row for row in rows if row.start.date() == day and row.id not in deleted),
            key=lambda row: (row.start, row.id),
        )

    def between(self, start: datetime, end: datetime) -> Iterator[Appointment]:
        """Appointments whose start lies in [start, end]."""
        day = start.date()
        while day <= end.date():
            yield from (row for row in self.day(day) if start <= row.start <= end)
            day += timedelta(days=1)

    def get(self, appointment_id: int) -> Appointment | None:
        with self._lock:
            if appointment_id in self._deleted:
                return None
            if appointment_id in self._edits:
                return self._edits[appointment_id]
        seeded_day = seeded_day_of(appointment_id)
        if seeded_day is None:
            return None
        return next((row for row in self._seeded(seeded_day) if row.id == appointment_id), None)

    def edit(self, request: dict[str, object]) -> Appointment:
        """Apply one admin edit: ``{"action": "status"|"cancel"|"reschedule"|"add"|"delete", …}``.

        The fields of each action are in docs/simulator.md.
        """
        action = request.get("action")
        now = self._now()
        if action == "add":
            return self._add(request, now)
        appointment_id = _int(request, "id")
        with self._lock:
            current = self._edits.get(appointment_id)
        current = current or self.get(appointment_id)
        if current is None:
            raise EditError(f"no appointment {appointment_id}")
        if action == "status":
            updated = current.changed(now, status=_status(request.get("status")))
        elif action == "cancel":
            updated = current.changed(now, status="Cancelled")
        elif action == "delete":
            # Gone from every read, with no row left to carry a new LastModifiedDate: only a full read of
            # its day can tell (what deleting an appointment in Tebra does).
            with self._lock:
                self._deleted.add(appointment_id)
            return current
        elif action == "reschedule":
            start = _datetime(request, "start")
            minutes = int(str(request.get("duration_minutes") or current.duration_minutes))
            fields: dict[str, object] = {"start": start, "end": start + timedelta(minutes=minutes)}
            if request.get("status"):
                fields["status"] = _status(request.get("status"))
            updated = current.changed(now, **fields)
        else:
            raise EditError(f"unknown action {action!r}: use status, cancel, reschedule, add or delete")
        with self._lock:
            self._edits[updated.id] = updated
        return updated

    def _add(self, request: dict[str, object], now: datetime) -> Appointment:
        patient = self.clinic.patient(_int(request, "patient_id"))
        if patient is None:
            raise EditError("unknown patient_id")
        provider_id = int(str(request.get("provider_id") or self.clinic.providers[0].id))
        if self.clinic.provider(provider_id) is None:
            raise EditError("unknown provider_id")
        location_id = int(str(request.get("location_id") or self.clinic.locations[0].id))
        if self.clinic.location(location_id) is None:
            raise EditError("unknown location_id")
        start = _datetime(request, "start")
        minutes = int(str(request.get("duration_minutes") or 30))
        with self._lock:
            appointment = Appointment(
                id=next(self._next_added),
                patient_id=patient.id,
                patient_full_name=patient.full_name,
                provider_id=provider_id,
                location_id=location_id,
                start=start,
                end=start + timedelta(minutes=minutes),
                status=_status(request.get("status") or "Scheduled"),
                reason=str(request.get("reason") or "Sick Visit"),
                created=now,
                last_modified=now,
            )
            self._edits[appointment.id] = appointment
        return appointment


def _stamped_by(row: Appointment, latest: datetime) -> Appointment:
    """``row`` with CreatedDate and LastModifiedDate no later than ``latest``."""
    if row.last_modified <= latest and row.created <= latest:
        return row
    created = min(row.created, latest)
    return replace(row, created=created, last_modified=max(created, min(row.last_modified, latest)))


def _int(request: dict[str, object], key: str) -> int:
    try:
        return int(str(request[key]))
    except (KeyError, ValueError) as exc:
        raise EditError(f"{key} must be an integer") from exc


def _datetime(request: dict[str, object], key: str) -> datetime:
    try:
        value = datetime.fromisoformat(str(request[key]))
    except (KeyError, ValueError) as exc:
        raise EditError(f"{key} must be an ISO practice-local date-time, e.g. 2026-03-02T09:30:00") from exc
    return value.replace(tzinfo=None, microsecond=0)


def _status(value: object) -> str:
    # Any Tebra spelling is allowed (the column is a free string), but a typo should fail loudly.
    text = str(value or "")
    if text not in STATUSES and text not in {
        "Check-out",
        "CheckedOut",
        "NoShow",
        "Unknown",
        "ReminderSent",
        "NeedsReschedule",
    }:
        raise EditError(f"unknown status {text!r}; one of {', '.join(STATUSES)}")
    return text
