"""kombu's Redis transport, with one fix: a lost broker connection must never kill the worker.

Seen in our Redis-restart drill (kombu 5.7): when the broker connection drops, Celery releases it, but the old
channel is still used afterwards — closing it restores the worker's unacknowledged messages, and a task that
finishes late acknowledges its message (acks_late). Each needs a Redis client, and building one from a
released connection fails with ``AttributeError: 'NoneType' object has no attribute 'hostname'``. Celery
handles the transport's *connection* errors there (it logs, reconnects, carries on), but the AttributeError
ended the worker ("Unrecoverable error").

Here a client asked of a released connection is refused with the connection error it is. Nothing is lost: an
unacknowledged message stays in the transport's unacked set in Redis, and the restore sweep puts it back on
the queue once the visibility timeout has passed (tasks/celery_factory.py), for this worker after it
reconnects or for any other. A task that had finished may so run twice; syncs are idempotent.

:func:`held_task_ids` reads what the transport holds for a queue, for the sync sweep (tasks/sync/sweep.py).
"""

from __future__ import annotations

import json
from typing import Any

import redis
from celery import Celery
from kombu import transport as kombu_transport
from kombu.transport import redis as kombu_redis


class _ReleasedRefused:
    """Refuse a client asked of a released connection (mixed into both channels below)."""

    connection: Any

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection was released")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]


class Channel(_ReleasedRefused, kombu_redis.Channel):
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(_ReleasedRefused, kombu_redis.SentinelChannel):
    """The same fix for the sentinel transport (REDIS_SENTINELS): its pool comes from ``_connparams`` too."""


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


TRANSPORT = "tasks.broker_transport:Transport"
SENTINEL_TRANSPORT = "tasks.broker_transport:SentinelTransport"


def claim_sentinel_scheme() -> None:
    """Make ``sentinel://`` URLs resolve to :class:`SentinelTransport`, not kombu's own.

    With several sentinels the broker URL is a ``;``-separated list, which kombu treats as failover
    alternates: after a lost connection it switches to the next one and takes the transport from that URL's
    scheme, dropping the ``broker_transport`` it was given. Seen in the failover drill: the worker's
    second reconnect ran kombu's plain sentinel transport and died of the very AttributeError this module
    fixes ("Unrecoverable error"). kombu resolves a scheme through its alias table at connect time, so the
    alias is pointed here (by tasks/celery_factory.py, only when REDIS_SENTINELS is set).
    """
    kombu_transport.TRANSPORT_ALIASES["sentinel"] = SENTINEL_TRANSPORT


def held_task_ids(app: Celery, queue: str) -> set[str]:
    """The ids of the tasks the broker holds for ``queue``: waiting in it (at any priority) or reserved by a
    worker and not yet acknowledged (a running task, a retry waiting out its countdown, a dead worker's
    message until the restore sweep puts it back). Read with kombu's own channel, so its key names and
    prefix are the ones the transport writes."""
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        client = channel.client
        names = {queue, *(f"{queue}{channel.sep}{step}" for step in channel.priority_steps if step)}
        pipe = client.pipeline(transaction=False)
        for name in sorted(names):
            pipe.lrange(name, 0, -1)
        pipe.hvals(channel.unacked_key)
        *waiting, reserved = pipe.execute()
    held = {_task_id(raw) for raws in waiting for raw in raws}
    held.update(_task_id(raw, reserved=True) for raw in reserved)
    held.discard("")
    return held


def _task_id(raw: bytes | str, *, reserved: bool = False) -> str:
    """A message's task id (Celery's protocol 2 header ``id``); ``''`` for anything else. An unacknowledged
    entry is ``[message, exchange, routing key]``."""
    try:
        message = json.loads(raw)
        if reserved:
            message = message[0]
        return str(message["headers"]["id"])
    except (ValueError, TypeError, KeyError, IndexError):
        return ""
