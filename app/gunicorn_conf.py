"""gunicorn settings for the API: ``gunicorn -c app/gunicorn_conf.py app.wsgi:app``.

Sized for 1,000+ open WebSockets on one process (docs/realtime.md, "gunicorn"). Command-line
flags win over this file; ``GUNICORN_CMD_ARGS`` works as usual.
"""

from __future__ import annotations

import os
from typing import Any

from config import load_settings
from config.parsing import is_loopback
from tasks.logs import gunicorn_logconfig_dict

_settings = load_settings()

bind = f"{_settings.api_host}:{_settings.api_port}"

# gthread: a socket holds its thread for as long as it is open (-k sync kills it at the worker timeout).
worker_class = "gthread"
# One process: each process runs its own Redis subscriber; scale out with more processes behind the balancer.
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
# Each socket holds one pool thread (the flask-sock handler); simple-websocket's reader is a second,
# separate thread. 1,500 covers 1,000 sockets with room for REST requests.
threads = 1500
# Every open socket is a connection; gthread stops accepting at this many (default 1,000: too few).
worker_connections = 2000
# The worker's heartbeat comes from gthread's main loop, not from the (never-ending) socket handlers.
timeout = 30
# SIGTERM: the relay closes sockets with 1001 at once (post_worker_init below); this bounds the rest.
graceful_timeout = 10
keepalive = 5
# gunicorn 27 opens a control socket in $HOME/.gunicorn/ by default (--no-control-socket on the CLI).
control_socket_disable = True
# No gunicorn access line: it quotes query strings (PHI one day); the app logs its own (tasks/logs.py).
accesslog = None
loglevel = _settings.log_level.lower()
# The arbiter's own lines in the same JSON as the app's (one formatter for every process).
logconfig_dict = gunicorn_logconfig_dict(_settings)


def on_starting(server: Any) -> None:
    """Development refuses to listen beyond loopback, --bind on the command line included: its token route
    hands any caller a token with every scope."""
    if _settings.app_env != "development":
        return
    exposed = [address for address in server.cfg.bind if not _local_bind(address)]
    if exposed:
        raise SystemExit(f"APP_ENV=development binds loopback only; refusing --bind {', '.join(exposed)}")


def _local_bind(address: str) -> bool:
    if address.startswith(("unix:", "fd://")):
        return True  # a Unix socket or an inherited descriptor: not a network listener of ours
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address
    return is_loopback(host.removeprefix("[").split("]")[0])


def post_worker_init(worker: Any) -> None:
    """Chain the relay's 1001 close in front of gthread's SIGTERM handler (installed just before this)."""
    from app.realtime.endpoint import close_sockets_on_sigterm

    close_sockets_on_sigterm(worker.wsgi)


def worker_int(worker: Any) -> None:
    """SIGINT/SIGQUIT (immediate stop): close the sockets with 1001 anyway, synchronously, before exiting."""
    from app.realtime.protocol import CLOSE_GOING_AWAY
    from app.realtime.relay import relay_of

    relay_of(worker.wsgi).shutdown(CLOSE_GOING_AWAY, "server shutting down")


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's prometheus files must stop counting toward live gauges (multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
