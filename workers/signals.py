"""Worker signal handlers: per-process clients dropped in each forked child; the heartbeat."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init, worker_ready, worker_shutdown

from config import Settings
from tasks.runtime import reset_runtime
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


def connect() -> None:
    """Connect the handlers once (idempotent: the module may be imported by several entry points)."""
    global _connected
    if not _connected:
        worker_process_init.connect(_drop_inherited_clients, weak=False)
        worker_ready.connect(_start_heartbeat, weak=False)
        worker_shutdown.connect(_stop_heartbeat, weak=False)
        _connected = True
