"""Flower's settings, taken from ours: ``celery -A workers.celery_app flower --conf=workers/flowerconfig.py``.

Flower's /api answers only with basic auth; its /healthcheck and /metrics do not, so it listens on loopback
(put a proxy in front of it to expose it).

Read-only: Flower's one basic-auth account has no scopes, no audit and no rate limit, and its control API
can send any task with any arguments, revoke tasks and shut workers down. This file removes those routes
from Flower's URL table before Flower builds its application (Flower reads this file first), so they answer
404 whoever asks; the dashboards, task and worker lists and task info stay (docs/operations.md). Control
workers with ``celery -A workers.celery_app control …`` from a host that holds the broker's password.
"""

from flower import urls as _flower_urls
from flower.api import control as _control
from flower.api import tasks as _tasks

from config import load_settings

_settings = load_settings()
if _settings.is_production and not (_settings.flower_user and _settings.flower_password):
    # Production lets a process hold no Flower secret (it is given to the flower service only); Flower
    # itself must not start open.
    raise SystemExit("flower: FLOWER_USER and FLOWER_PASSWORD are required in production")

# Every route that changes something: task sending, aborting, revoking, time and rate limits, worker
# shutdown, pool and queue control.
CONTROL_HANDLERS = frozenset(
    {_tasks.TaskApply, _tasks.TaskAsyncApply, _tasks.TaskSend, _tasks.TaskAbort}
    | {getattr(_control, name) for name in dir(_control) if name.startswith(("Worker", "Task"))}
)
_flower_urls.handlers[:] = [
    handler
    for handler in _flower_urls.handlers
    if not (isinstance(handler, tuple) and len(handler) >= 2 and handler[1] in CONTROL_HANDLERS)
]

address = _settings.flower_address
port = _settings.flower_port
basic_auth = [f"{_settings.flower_user}:{_settings.flower_password}"]
persistent = False
max_tasks = 10000
