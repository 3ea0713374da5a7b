"""A lost broker connection must not kill the worker (tasks/broker_transport.py).

The state kombu 5.7 leaves behind in the race (the channel's pool dropped, its connection released) is set up
on a real connection to the test Redis; asking that channel for a client — to restore unacked messages on
close, or to acknowledge a late task — then raises a connection error, which Celery handles while it
reconnects, instead of the AttributeError that ended the worker.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from kombu.common import ignore_errors

from config import load_settings
from tasks.broker_transport import Channel, Transport
from tasks.celery_factory import create_celery
from tests.conftest import TEST_BROKER_URL


def released_channel() -> tuple[Any, Any]:
    app = create_celery(load_settings({"APP_ENV": "test", "REDIS_URL": TEST_BROKER_URL}))
    conn = app.connection_for_write()
    channel = conn.channel()
    assert isinstance(conn.transport, Transport) and isinstance(channel, Channel)
    channel._disconnect_pools()
    channel.connection.client = None  # what kombu leaves when it released the connection first
    return conn, channel


def test_restoring_unacked_messages_on_a_released_connection_is_a_connection_error(
    redis_service: str,
) -> None:
    conn, channel = released_channel()
    channel.qos._delivered["1"] = object()  # one unacked message the worker held
    with pytest.raises(redis.exceptions.ConnectionError):
        channel.qos.restore_unacked()
    ignore_errors(conn, channel.qos.restore_unacked)  # what Celery does on connection loss: not fatal
    channel.qos._delivered.clear()  # the stand-in: nothing for kombu's exit-time restore to retry


def test_a_late_ack_on_a_released_connection_is_a_connection_error(redis_service: str) -> None:
    conn, channel = released_channel()
    with pytest.raises(tuple(conn.connection_errors)):
        channel.qos.ack("1")
