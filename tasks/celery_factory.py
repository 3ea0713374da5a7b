"""The one place a Celery app is built. The worker entry point and the API both call ``create_celery``."""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from config import Settings
from tasks import broker_transport, connections, names

SYNC_QUEUE = "sync"
DETAILS_QUEUE = "details"  # GetPatient lookups: lower priority, never ahead of a day's sync
WORKER_SOFT_SHUTDOWN_TIMEOUT_S = 10.0

TASK_MODULES = ["tasks.sync.job", "tasks.patients.job", "tasks.providers.job", "tasks.diagnostics"]


def _queue(name: str) -> Queue:
    # Explicit exchange and routing key: a bare Queue() inherits the default queue's exchange and key,
    # and the two queues would receive each other's messages.
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def celery_config(settings: Settings) -> dict[str, object]:
    """Celery settings as data; each choice says why."""
    redis_options: dict[str, object] = {
        # Every network edge has a timeout: a hung Redis must not hang a worker or the API's enqueue.
        "socket_timeout": settings.redis_socket_timeout_s,
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "health_check_interval": 30,
        # A message reserved but not acked within this is delivered again. It must exceed the longest a task
        # can legitimately hold a message: its hard time limit plus the longest retry countdown (a countdown
        # is an ETA the worker holds unacked). Settings.validate() refuses a smaller value. It is also the
        # delay before a hard-killed worker's messages run again, so it is kept no larger than it must be.
        "visibility_timeout": settings.broker_visibility_timeout_s,
        # Sweep for such expired messages every 10 s (kombu's default sweeps every 10th tick, ~100 s).
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
        # A worker that consumes both queues takes from them in the order listed (sync, then details), not in
        # turn: a free process always picks a waiting sync before any patient lookup (docs/tebra.md).
        "queue_order_strategy": "priority",
    }
    backend_options: dict[str, object] = {"retry_policy": {"timeout": settings.redis_socket_timeout_s}}
    # With REDIS_SENTINELS, kombu's sentinel transport and Celery's sentinel backend ask the sentinels for
    # the primary of REDIS_SENTINEL_MASTER, again after each lost connection (tasks/connections.py).
    ha = connections.celery_options(settings)
    sentinel = "broker_sentinel" in ha
    if sentinel:
        broker_transport.claim_sentinel_scheme()
    redis_options.update(ha.pop("broker_sentinel", {}))
    backend_options.update(ha.pop("backend_sentinel", {}))
    broker_url = connections.celery_url(settings, settings.broker_url)
    return {
        "broker_url": broker_url,
        # Celery lets the CELERY_BROKER_URL variable (one of our settings too) win over broker_url; these two
        # win over it, so the sentinels' form of the URL is what every connection uses.
        "broker_read_url": broker_url,
        "broker_write_url": broker_url,
        # kombu's Redis transport with the fix for a worker killed by a lost connection (the module says why).
        "broker_transport": broker_transport.SENTINEL_TRANSPORT if sentinel else broker_transport.TRANSPORT,
        "result_backend": connections.celery_url(settings, settings.result_backend),
        "broker_transport_options": redis_options,
        "result_backend_transport_options": backend_options,
        **ha,
        "redis_socket_timeout": settings.redis_socket_timeout_s,
        "redis_socket_connect_timeout": settings.redis_connect_timeout_s,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": settings.redis_connect_timeout_s,
        # JSON only: task arguments and results are dates, ids and counts, never objects or PHI.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_expires": 86400,
        "result_extended": True,
        # At-least-once: ack after the task ran, requeue if the worker process dies under it, and a task
        # cut off by a lost broker connection is cancelled (it will be redelivered), not finished twice.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # One message per process at a time: a long sync never sits behind another in a local buffer.
        "worker_prefetch_multiplier": 1,
        # WORKER_CONCURRENCY pool processes however the worker is started (make run, make worker, compose).
        "worker_concurrency": settings.worker_concurrency,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        "task_track_started": True,
        # SIGTERM is a warm shutdown: no new messages; the running task finishes (within its time limit) and
        # is acked. SIGQUIT (or Ctrl+C twice) is a cold one: running tasks get this long, then are cancelled
        # and requeued at once instead of waiting out the visibility timeout (docs/operations.md).
        "worker_soft_shutdown_timeout": WORKER_SOFT_SHUTDOWN_TIMEOUT_S,
        # Flower shows every task, its runtime and its state.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_default_queue": SYNC_QUEUE,
        "task_queues": [_queue(SYNC_QUEUE), _queue(DETAILS_QUEUE)],
        "task_routes": {names.FETCH_DETAILS: {"queue": DETAILS_QUEUE}},
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
        "enable_utc": True,
    }


def create_celery(settings: Settings, *, main: str = "clinic_relay") -> Celery:
    """A Celery app configured from ``settings``; the task modules are imported when it finalizes."""
    app = Celery(main)
    # The backend named here too, not only as result_backend: Celery prefers the CELERY_RESULT_BACKEND
    # variable (one of our settings) to that setting, and with REDIS_SENTINELS the URL it needs is another.
    app.backend_cls = connections.celery_url(settings, settings.result_backend)
    app.conf.update(celery_config(settings))
    app.conf.clinic_settings = settings
    app.conf.imports = TASK_MODULES
    return app
