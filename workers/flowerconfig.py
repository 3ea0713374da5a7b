"""Flower's settings, taken from ours: ``celery -A workers.celery_app flower --conf=workers/flowerconfig.py``.

Flower's /api answers only with basic auth; its /healthcheck and /metrics do not, so it listens on loopback
(put a proxy in front of it to expose it)."""

from config import load_settings

_settings = load_settings()

address = _settings.flower_address
port = _settings.flower_port
basic_auth = [f"{_settings.flower_user}:{_settings.flower_password}"]
persistent = False
max_tasks = 10000
