"""Events go to the capped stream and the channel in one step, in order, with their stream id."""

from __future__ import annotations

import json

import pytest
import redis

from tasks import events, keys
from tasks.events import EventPublisher


def test_publish_appends_and_publishes_the_same_envelope(redis_client: redis.Redis) -> None:
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.events_channel(redis_client))
    pubsub.get_message(timeout=1)
    sent = EventPublisher(redis_client, sender="test", maxlen=100).publish(
        events.SCHEDULE_SYNCED, {"date": "2026-11-25", "counts": {"appointments": 3}}
    )
    message = pubsub.get_message(timeout=2)
    assert message is not None
    assert json.loads(message["data"]) == sent
    [(stream_id, fields)] = redis_client.xrange(keys.AGENT_UPDATES)
    assert stream_id == sent["id"]
    assert fields["sender"] == "test" and fields["action"] == events.SCHEDULE_SYNCED
    assert events.envelope_from_entry(stream_id, fields) == sent
    pubsub.close()


def test_read_since_returns_what_came_after_in_order(redis_client: redis.Redis) -> None:
    publisher = EventPublisher(redis_client, sender="test", maxlen=100)
    sent = [
        publisher.publish(events.PATIENT_STATUS_CHANGED, {"date": "2026-11-25", "n": n}) for n in range(5)
    ]
    replay = events.read_since(redis_client, sent[1]["id"])
    assert [e["data"]["n"] for e in replay] == [2, 3, 4]
    assert events.read_since(redis_client, sent[-1]["id"]) == []


def test_stream_is_capped(redis_client: redis.Redis) -> None:
    publisher = EventPublisher(redis_client, sender="test", maxlen=100)
    for n in range(400):
        publisher.publish(events.SCHEDULE_SYNC_STARTED, {"date": "2026-11-25", "n": n})
    # MAXLEN ~ trims whole nodes (100 entries): the length stays within a node of the cap.
    assert redis_client.xlen(keys.AGENT_UPDATES) <= 200


def test_unknown_event_types_are_refused(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        EventPublisher(redis_client, sender="test", maxlen=100).publish("schedule_exploded", {})
    assert redis_client.xlen(keys.AGENT_UPDATES) == 0


@pytest.mark.parametrize(
    ("event_type", "data", "topic"),
    [
        (events.SCHEDULE_SYNCED, {"date": "2026-11-25"}, "schedule:2026-11-25"),
        (events.SCHEDULE_SYNC_FAILED, {"date": "2026-11-25"}, "schedule:2026-11-25"),
        (events.PATIENT_STATUS_CHANGED, {"date": "2026-11-25"}, "patients:2026-11-25"),
        (events.PATIENT_DETAILS_UPDATED, {"date": "2026-11-25"}, "patients:2026-11-25"),
        (events.BREAKER_STATE_CHANGED, {"state": "open"}, "ops"),
    ],
)
def test_topic_follows_type_and_date(event_type: str, data: dict[str, str], topic: str) -> None:
    assert events.topic_of(event_type, data) == topic
