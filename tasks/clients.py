"""The clients both processes build from settings on first use: Redis, the PHI cipher, the schedule store
and the event publisher. The API (app/services.py) and the worker (tasks/runtime.py) each extend it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar
from zoneinfo import ZoneInfo

import redis

from config import Settings
from tasks.connections import make_redis
from tasks.events import EventPublisher
from tasks.phi import PhiCipher
from tasks.sync.store import ScheduleStore


@dataclass
class Clients:
    """Built lazily: no connection opens until something uses it."""

    settings: Settings
    sender: ClassVar[str] = "relay"  # who appends events (the stream's ``sender`` field)

    def make_redis(self) -> redis.Redis:
        return make_redis(self.settings)

    @cached_property
    def redis(self) -> redis.Redis:
        return self.make_redis()

    @cached_property
    def cipher(self) -> PhiCipher:
        return PhiCipher.from_settings(self.settings)

    @cached_property
    def store(self) -> ScheduleStore:
        return ScheduleStore(
            self.redis,
            self.cipher,
            hmac_key=self.settings.phi_hmac_key,
            retention_days=self.settings.retention_days,
        )

    @cached_property
    def publisher(self) -> EventPublisher:
        return EventPublisher(self.redis, sender=self.sender, maxlen=self.settings.stream_maxlen)

    @property
    def clinic_tz(self) -> ZoneInfo:
        return ZoneInfo(self.settings.clinic_tz)
