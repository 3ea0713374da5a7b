"""A replayed event is byte for byte the text the live channel carried (real Redis, db 12)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from app.realtime.stream import entries_after, newest_id
from tasks import keys
from tasks.events import EventPublisher, entry_text
from tests.conftest import TEST_REDIS_URL

# db 12 of the test server (TEST_REDIS_URL's host and port): never another session's Redis.
REDIS_URL = TEST_REDIS_URL.rsplit("/", 1)[0] + "/12"


@pytest.fixture
def db() -> Iterator[redis.Redis]:
    """Redis db 12 (the relay's tests' database), flushed."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True, socket_timeout=5)
    client.flushdb()
    yield client
    client.close()


def test_entry_text_is_what_the_channel_carried(db: redis.Redis) -> None:
    pubsub = db.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.events_channel(db))
    assert pubsub.get_message(timeout=1) is None  # the subscribe confirmation, swallowed
    publisher = EventPublisher(db, sender="test", maxlen=100)
    sent = publisher.publish(
        "schedule_synced", {"date": "2031-05-01", "note": 'café "✓" \\ \u2028', "n": [1, 2]}
    )
    live = None
    while live is None or sent["id"] not in live["data"]:
        live = pubsub.get_message(timeout=2)
        assert live is not None, "no event on the channel"
    pubsub.close()
    ((entry_id, fields),) = db.xrange(keys.AGENT_UPDATES)
    assert entry_text(entry_id, fields) == live["data"].encode()


def test_entries_after_pages_through_the_stream(db: redis.Redis) -> None:
    publisher = EventPublisher(db, sender="test", maxlen=10000)
    ids = [publisher.publish("schedule_synced", {"date": "2031-05-01", "n": n})["id"] for n in range(1203)]
    got = [entry_id for entry_id, _ in entries_after(db, ids[1], limit=5000)]
    assert got == ids[2:]
    assert len(list(entries_after(db, "0-0", limit=700))) == 700
    assert newest_id(db) == ids[-1]
