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
"""

from __future__ import annotations

from typing import Any

import redis
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
