"""Every kind of Redis client goes through the sentinels and keeps working after the primary is SIGKILLed.

A real primary, a real replica and three real sentinels (tests/support/redis_ha.py). REDIS_URL names a port
where nothing listens: only the sentinels can lead a client to the data. Before and after the kill, each
kind of client does its job: the data client with a registered Lua script (the new primary has never seen
it: NOSCRIPT, sent again), the board's raw EVALSHA, the rate limiter's script, /ready's probes of the data
and the broker, the metrics scrape client, the relay's pub/sub subscriber (it subscribes again and misses no
event), and a real prefork Celery worker with kombu's sentinel transport and the sentinel result backend.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from app import create_app
from app.ratelimit import RateLimiter
from app.realtime.subscriber import EventSubscriber
from config import Settings, load_settings
from tasks import connections, events, metrics, names
from tasks.celery_factory import create_celery
from tasks.clients import Clients
from tasks.patients.board import PatientFlow
from tests.support.processes import start_worker, stop, wait_until
from tests.support.redis_ha import SentinelGroup, redis_probes_ok

WEEKDAY = "2026-03-04"  # a Wednesday: the board of a day nobody synced is empty, not an error


class Sink:
    """What the relay subscriber handed over, in order."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, key: Any, event: dict[str, Any], text: bytes) -> None:
        with self.lock:
            self.ids.append(event["id"])


def exercise(settings: Settings, data: redis.Redis, app: Any) -> str:
    """One round of every client kind; returns the id of the event it published."""
    clients = Clients(settings)
    published = clients.publisher.publish(events.SCHEDULE_SYNCED, {"date": WEEKDAY, "count": 0})
    flow = PatientFlow(data, clients.cipher, sender="api", maxlen=settings.stream_maxlen)
    assert flow.board(WEEKDAY).rows == []
    assert RateLimiter(data, 10, 1.0).take("sentinel-test", 1).allowed
    assert metrics.scrape_client(settings, settings.broker_url).ping()
    assert redis_probes_ok(app)
    return str(published["id"])


# Alone: every client must reconnect within the failover's deadlines, which other tests loading the 2 cores
# can stretch past them (a clean parallel run timed out waiting for a result).
@pytest.mark.alone
def test_every_client_follows_the_sentinels_through_a_failover(
    sentinel_group: SentinelGroup, ha_env: dict[str, str], tmp_path: Path
) -> None:
    settings = load_settings(ha_env)
    data = connections.make_redis(settings)
    app = create_app(settings)
    celery = create_celery(settings)
    worker = start_worker(ha_env, tmp_path / "worker.log", name="sentinel-worker", concurrency=1)
    sink = Sink()
    subscriber = EventSubscriber(settings, sink)
    try:
        subscriber.start()
        assert subscriber.ready.wait(10)
        before = exercise(settings, data, app)
        assert celery.send_task(names.NOOP, args=[1]).get(timeout=30) == 1
        wait_until(lambda: before in sink.ids, 10, "the event before the failover")

        old = sentinel_group.kill_primary()
        new = sentinel_group.wait_failover(old)
        assert new == sentinel_group.replica_port

        # /ready's probes have no retries: the first after the kill may meet the dead server's connection.
        wait_until(lambda: redis_probes_ok(app), 20, "ready probes on the new primary")
        after = exercise(settings, data, app)  # the scripts are new to this server: NOSCRIPT, sent again
        assert data.info("server")["tcp_port"] == new
        assert celery.send_task(names.NOOP, args=[2]).get(timeout=60) == 2
        wait_until(lambda: after in sink.ids, 30, "the event after the failover")
        assert sink.ids == sorted(set(sink.ids), key=events.stream_id_key)  # in order, none twice
        assert subscriber.reconnects >= 1
    finally:
        subscriber.stop()
        stop(worker)
        celery.close()
