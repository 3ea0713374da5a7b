"""The synthetic clinic: one practice, its providers, locations, patients and each day's appointments.

Everything is a pure function of (seed, date), so two simulators with the same seed agree and a test can
predict what a day holds. Names are built from syllables so that no row can be mistaken for a real person.
"""

from __future__ import annotations

import functools
import itertools
import random
from bisect import bisect
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta

# Weighted like a working day: most rows still ahead, some in flight, a few lost. Spelled as Tebra renders
# them: legacy display names for the classic states, enum tokens for the newer ones (docs/tebra.md, "List
# reads and their rows").
STATUS_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("Scheduled", 26),
    ("Confirmed", 22),
    ("Check-in", 7),
    ("CheckedIn", 3),
    ("Roomed", 6),
    ("ReadyToBeSeen", 4),
    ("Check-out", 12),
    ("Cancelled", 7),
    ("No-show", 4),
    ("Rescheduled", 3),
    ("Tentative", 2),
)
STATUSES = tuple(name for name, _ in STATUS_WEIGHTS)
REASONS = ("Annual Physical", "Follow Up", "Sick Visit", "New Patient", "Medication Review", "Lab Review")
DURATIONS_MIN = (15, 15, 20, 30, 30, 30, 45, 60)
OPEN_HOUR, CLOSE_HOUR = 8, 17  # clinic hours, practice-local
PATIENT_POOL = 600
FIRST_PATIENT_ID = 20001
EPOCH = date(2000, 1, 1)  # appointment ids encode their day as days since this date
ADDED_ID_BASE = 900_000_000  # ids of appointments added at run time

_ONSETS = (
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "gl",
    "kr",
    "tr",
    "qu",
    "th",
    "zh",
)
_VOWELS = ("a", "e", "i", "o", "u", "ae", "io", "ou")
_CODAS = ("", "", "n", "r", "l", "s", "x", "th", "m")


@dataclass(frozen=True)
class Practice:
    id: int
    name: str
    created: datetime


@dataclass(frozen=True)
class Provider:
    id: int
    first_name: str
    last_name: str
    degree: str
    specialty: str
    npi: str
    created: datetime

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name} {self.degree}"


@dataclass(frozen=True)
class ServiceLocation:
    id: int
    name: str


@dataclass(frozen=True)
class Patient:
    id: int
    first_name: str
    middle_name: str
    last_name: str
    dob: date
    gender: str
    home_phone: str
    mobile_phone: str
    email: str
    address_line1: str
    city: str
    state: str
    zip_code: str
    created: datetime

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.middle_name[:1]}. {self.last_name}"


@dataclass(frozen=True)
class Appointment:
    id: int
    patient_id: int
    patient_full_name: str
    provider_id: int
    location_id: int
    start: datetime  # practice-local wall clock
    end: datetime
    status: str
    reason: str
    created: datetime
    last_modified: datetime
    notes: str = ""

    @property
    def duration_minutes(self) -> int:
        return int((self.end - self.start).total_seconds() // 60)

    def changed(self, at: datetime, **fields: object) -> Appointment:
        """A copy with ``fields`` changed and LastModifiedDate moved to ``at`` (never backwards)."""
        return replace(self, last_modified=max(at, self.last_modified), **fields)  # type: ignore[arg-type]


_MINUTE, _HOUR, _DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
_STATUS_SUMS = tuple(itertools.accumulate(weight for _, weight in STATUS_WEIGHTS))
_STATUS_TOTAL = _STATUS_SUMS[-1] + 0.0


def _below(rng: random.Random, n: int) -> int:
    """``rng.randrange(n)`` (so also ``randint(a, b) - a`` and ``choice``'s index): CPython's draw for it,
    one call of getrandbits per try, without the two or three layers of argument checks around it."""
    bits = n.bit_length()
    drawn = rng.getrandbits(bits)
    while drawn >= n:
        drawn = rng.getrandbits(bits)
    return drawn


def _word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


def _phone(rng: random.Random) -> str:
    # 555-01xx is reserved for fiction in the North American numbering plan.
    return f"({rng.randint(200, 989)}) 555-01{rng.randint(0, 99):02d}"


class Clinic:
    """The seeded clinic. Providers, locations and patients are fixed per seed; appointments are per day."""

    def __init__(self, seed: int, practice_name: str, appointments_per_day: int) -> None:
        self.seed = seed
        self.appointments_per_day = appointments_per_day
        rng = random.Random(f"{seed}:clinic")
        self.practice = Practice(id=1, name=practice_name, created=datetime(2019, 3, 4, 9, 30))
        self.providers = tuple(self._provider(rng, index) for index in range(rng.randint(4, 6)))
        stem = practice_name.split()[0] if practice_name.strip() else "Clinic"
        self.locations = (
            ServiceLocation(id=11, name=f"{stem} Main Office"),
            ServiceLocation(id=12, name=f"{stem} North Annex"),
        )
        # Looked up for each row written (GetAppointments, the admin API): a dict, not a scan of the tuple.
        self._providers_by_id = {provider.id: provider for provider in self.providers}
        self._locations_by_id = {location.id: location for location in self.locations}
        # A patient is a pure function of (seed, id) and immutable: generate each once. A day's 40 rows each
        # looked theirs up afresh, the simulator's largest cost per call (docs/simulator.md).
        self.patient = functools.lru_cache(maxsize=PATIENT_POOL)(self.patient)  # type: ignore[method-assign]

    def _provider(self, rng: random.Random, index: int) -> Provider:
        degree, specialty = rng.choice(
            (
                ("MD", "Family Medicine"),
                ("DO", "Internal Medicine"),
                ("NP", "Family Nurse Practitioner"),
                ("MD", "Pediatrics"),
                ("PA", "Physician Assistant"),
            )
        )
        return Provider(
            id=101 + index,
            first_name=_word(rng, 2),
            last_name=_word(rng, rng.randint(2, 3)),
            degree=degree,
            specialty=specialty,
            # Real NPIs never start with 9, so a synthetic one cannot collide with a real provider.
            npi=f"9{rng.randint(0, 999_999_999):09d}",
            created=datetime(2019, 3, 4, 10, 0) + timedelta(days=30 * index),
        )

    def provider(self, provider_id: int) -> Provider | None:
        return self._providers_by_id.get(provider_id)

    def location(self, location_id: int) -> ServiceLocation | None:
        return self._locations_by_id.get(location_id)

    def patient(self, patient_id: int) -> Patient | None:
        """The pool is generated lazily: each patient is a pure function of (seed, id)."""
        if not FIRST_PATIENT_ID <= patient_id < FIRST_PATIENT_ID + PATIENT_POOL:
            return None
        rng = random.Random(f"{self.seed}:patient:{patient_id}")
        first, middle, last = _word(rng, 2), _word(rng, 2), _word(rng, rng.randint(2, 3))
        return Patient(
            id=patient_id,
            first_name=first,
            middle_name=middle,
            last_name=last,
            dob=date(1935, 1, 1) + timedelta(days=rng.randint(0, 365 * 88)),
            gender=rng.choice(("Female", "Male")),
            home_phone=_phone(rng),
            mobile_phone=_phone(rng),
            email=f"{first.lower()}.{last.lower()}@example.test",
            address_line1=f"{rng.randint(100, 9899)} {_word(rng, 2)} Street",
            city=_word(rng, 2) + "ville",
            state=rng.choice(("IL", "WI", "IA", "MO", "MN")),
            zip_code=f"6{rng.randint(0, 9999):04d}",
            created=datetime(2020, 1, 1) + timedelta(minutes=rng.randint(0, 60 * 24 * 900)),
        )

    def appointments_on(self, day: date) -> list[Appointment]:
        """The seeded schedule of one clinic day (Monday to Friday), ordered by start time."""
        if day.weekday() >= 5 or day < EPOCH:
            return []
        rng = random.Random(f"{self.seed}:{day.isoformat()}")
        slots = (CLOSE_HOUR - OPEN_HOUR) * 4  # quarter hours
        base_id = (day - EPOCH).days * 1000
        opening = datetime.combine(day, time(OPEN_HOUR))
        midnight = datetime.combine(day, time.min)
        providers, locations = self.providers, self.locations
        # Every draw is the one rng.randrange/randint/choice/choices made here before, in the same order
        # (_below is their randrange), so each day is what it always was. Generating a day not asked before
        # is the largest piece of a GetAppointments call (docs/simulator.md).
        rows = []
        for index in range(self.appointments_per_day):
            # A multiple of one minute is the same value as timedelta(minutes=n) at half the cost: building
            # the deltas by keyword was about a third of generating a day.
            start = opening + _MINUTE * (15 * _below(rng, slots))
            end = start + _MINUTE * DURATIONS_MIN[_below(rng, len(DURATIONS_MIN))]
            patient = self.patient(FIRST_PATIENT_ID + _below(rng, PATIENT_POOL))
            assert patient is not None
            # Booked 1-60 days ahead and last touched before the day began: only run-time edits are "recent".
            created = start - (_DAY * (1 + _below(rng, 60)) + _MINUTE * _below(rng, 601))
            modified = min(
                created + _HOUR * _below(rng, 73),
                midnight - _MINUTE * (1 + _below(rng, 600)),
            )
            rows.append(
                Appointment(
                    id=base_id + index + 1,
                    patient_id=patient.id,
                    patient_full_name=patient.full_name,
                    provider_id=providers[_below(rng, len(providers))].id,
                    location_id=locations[_below(rng, len(locations))].id,
                    start=start,
                    end=end,
                    # rng.choices(STATUSES, weights=…)[0], which draws one random() and bisects the sums.
                    status=STATUSES[bisect(_STATUS_SUMS, rng.random() * _STATUS_TOTAL, 0, len(STATUSES) - 1)],
                    reason=REASONS[_below(rng, len(REASONS))],
                    created=created,
                    last_modified=max(modified, created),
                )
            )
        return sorted(rows, key=lambda row: (row.start, row.id))


def seeded_day_of(appointment_id: int) -> date | None:
    """The day a seeded appointment id belongs to (None for ids added at run time)."""
    if appointment_id >= ADDED_ID_BASE or appointment_id <= 0:
        return None
    return EPOCH + timedelta(days=appointment_id // 1000)
