"""Everything one running simulator holds, built once from its options (no I/O until first use)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from tebra_sim import dates
from tebra_sim.clinic import Clinic
from tebra_sim.faults import Faults
from tebra_sim.options import SimOptions
from tebra_sim.schema import Schema, load_schema
from tebra_sim.stats import Stats
from tebra_sim.store import AppointmentStore
from tebra_sim.throttle import Throttle


@dataclass
class Simulation:
    options: SimOptions
    schema: Schema
    clinic: Clinic
    store: AppointmentStore
    throttle: Throttle
    faults: Faults
    stats: Stats
    tz: ZoneInfo
    # Set on shutdown so that calls held open by the "hang" fault let go at once.
    stopping: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def create(cls, options: SimOptions) -> Simulation:
        tz = ZoneInfo(options.clinic_tz)
        clinic = Clinic(options.seed, options.practice_name, options.appointments_per_day)
        return cls(
            options=options,
            schema=load_schema(),
            clinic=clinic,
            store=AppointmentStore(clinic, now=lambda: dates.practice_now(tz)),
            throttle=Throttle(),
            faults=Faults(
                throttle=options.throttle,
                latency_ms=options.latency_ms,
                max_range_days=options.max_range_days,
            ),
            stats=Stats(),
            tz=tz,
        )

    def now(self) -> datetime:
        return dates.practice_now(self.tz)

    def today(self) -> date:
        return self.now().date()

    def reset(self) -> None:
        """Back to the seed: no edits, no faults, no counters, no throttle history."""
        self.store.reset()
        self.faults.reset()
        self.stats.reset()
        self.throttle.reset()
