"""What the web process talks to, built once per app: a Redis client, the schedule store, the Celery app.

Bound to the Flask app in ``init_app``; nothing connects until the first request uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from zoneinfo import ZoneInfo

import redis
from celery import Celery
from flask import Flask, current_app

from config import Settings
from tasks.celery_factory import create_celery
from tasks.connections import make_redis
from tasks.events import EventPublisher
from tasks.phi import PhiCipher
from tasks.store import ScheduleStore

EXTENSION_KEY = "clinic_relay"


@dataclass
class Services:
    """The web process's clients, made on first use."""

    settings: Settings

    @cached_property
    def redis(self) -> redis.Redis:
        return make_redis(self.settings)

    @cached_property
    def celery(self) -> Celery:
        return create_celery(self.settings, main="clinic_relay_api")

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
        return EventPublisher(self.redis, sender="api", maxlen=self.settings.stream_maxlen)

    @property
    def clinic_tz(self) -> ZoneInfo:
        return ZoneInfo(self.settings.clinic_tz)


def init_app(app: Flask, settings: Settings) -> None:
    app.extensions[EXTENSION_KEY] = Services(settings)


def services() -> Services:
    """The current app's services."""
    found: Services = current_app.extensions[EXTENSION_KEY]
    return found
