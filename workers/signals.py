"""Worker signal handlers: per-process clients dropped in each forked child; the heartbeat; JSON logs;
request and task ids in log lines; task metrics."""

from __future__ import annotations

from typing import Any

from celery.signals import beat_init, setup_logging, worker_process_init, worker_ready, worker_shutdown

from config import Settings, load_settings
from tasks import correlation
from tasks.logs import configure_logging, set_process_name
from tasks.runtime import reset_runtime
from workers import metrics
from workers.heartbeat import Heartbeat

_connected = False
_heartbeat: Heartbeat | None = None


def _drop_inherited_clients(**_: Any) -> None:
    # A prefork child inherits the parent's sockets; sharing them corrupts both sides' protocol state.
    reset_runtime()


def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    global _heartbeat
    settings: Settings = sender.app.conf.clinic_settings
    _heartbeat = Heartbeat(settings, str(sender.hostname))
    _heartbeat.start()


def _stop_heartbeat(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()


def _configure_logging(**_: Any) -> None:
    # Connected, this replaces Celery's own logging setup (worker and beat): JSON lines like every process.
    configure_logging(load_settings(), "worker")


def _name_beat(**_: Any) -> None:
    set_process_name("beat")


def connect() -> None:
    """Connect the handlers once (idempotent: the module may be imported by several entry points)."""
    global _connected
    if not _connected:
        worker_process_init.connect(_drop_inherited_clients, weak=False)
        worker_ready.connect(_start_heartbeat, weak=False)
        worker_shutdown.connect(_stop_heartbeat, weak=False)
        setup_logging.connect(_configure_logging, weak=False)
        beat_init.connect(_name_beat, weak=False)
        correlation.connect()
        metrics.connect()
        _connected = True
