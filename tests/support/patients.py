"""Seed a clinic day's patient-flow entries straight into Redis, the way a sync writes them."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import redis

from config import Settings
from tasks.phi import PhiCipher
from tasks.sync.reconcile import write_day
from tasks.sync.store import ScheduleStore


def store_for(client: redis.Redis, settings: Settings) -> ScheduleStore:
    """The schedule store the API and the workers build from these settings."""
    return ScheduleStore(
        client,
        PhiCipher.from_settings(settings),
        hmac_key=settings.phi_hmac_key,
        retention_days=settings.retention_days,
    )


def seed_day(
    client: redis.Redis, settings: Settings, date: str, statuses: Sequence[str], *, prefix: str = "flow"
) -> list[str]:
    """One patient per status (appointments 15 minutes apart from 08:00); their hpids, in that order."""
    store = store_for(client, settings)
    appointments = [
        {
            "id": f"{prefix}-{index}",
            "patient_id": f"{prefix}-patient-{index}",
            "patient_name": f"Testa Patient {index}",
            "start": f"{date}T{8 + index // 4:02d}:{(index % 4) * 15:02d}:00-06:00",
            "provider_name": "Dr Sim Ulator",
            "location": "Main",
            "reason": "Follow Up",
            "tebra_status": status,
            "status": status,
        }
        for index, status in enumerate(statuses)
    ]
    write_day(store, date, appointments)
    return [store.hpid(str(appt["patient_id"])) for appt in appointments]


def quiet_date(tz: str = "America/Chicago") -> str:
    """A clinic day far from the ones other suites use: Redis pub/sub is server-wide, topics are not."""
    today = datetime.now(ZoneInfo(tz)).date()
    return (today + timedelta(days=random.randint(120, 330))).isoformat()
