"""Worker signal handlers: per-process clients are dropped in each forked child."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init

from tasks.runtime import reset_runtime

_connected = False


def _drop_inherited_clients(**_: Any) -> None:
    # A prefork child inherits the parent's sockets; sharing them corrupts both sides' protocol state.
    reset_runtime()


def connect() -> None:
    """Connect the handlers once (idempotent: the module may be imported by several entry points)."""
    global _connected
    if not _connected:
        worker_process_init.connect(_drop_inherited_clients, weak=False)
        _connected = True
