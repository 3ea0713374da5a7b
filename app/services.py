"""What the web process talks to, built once per app: a Redis client, the schedule store, the Celery app.

Bound to the Flask app in ``init_app``; nothing connects until the first request uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

from celery import Celery
from flask import Flask, current_app

from config import Settings
from tasks.celery_factory import create_celery
from tasks.clients import Clients
from tasks.phi import PhiCipher, RememberingCipher, keyring

EXTENSION_KEY = "clinic_relay"


@dataclass
class Services(Clients):
    """The web process's clients, made on first use (its own Redis pool: threads share it)."""

    sender: ClassVar[str] = "api"

    @cached_property
    def cipher(self) -> PhiCipher:
        # Reads open the same names again and again: remember them briefly (PHI_OPEN_MEMORY_S, 0 = off).
        if self.settings.phi_open_memory_s <= 0:
            return PhiCipher.from_settings(self.settings)
        return RememberingCipher(*keyring(self.settings), forget_after_s=self.settings.phi_open_memory_s)

    @cached_property
    def celery(self) -> Celery:
        return create_celery(self.settings, main="clinic_relay_api")


def init_app(app: Flask, settings: Settings) -> None:
    app.extensions[EXTENSION_KEY] = Services(settings)


def services() -> Services:
    """The current app's services."""
    found: Services = current_app.extensions[EXTENSION_KEY]
    return found
