"""The REST API under /api/v1."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")

# Route modules register themselves on ``bp`` when imported.
from app.api import appointments, ops, patients, providers, schedule, task_status  # noqa: E402

__all__ = ["appointments", "bp", "ops", "patients", "providers", "schedule", "task_status"]
