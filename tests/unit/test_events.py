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


def test_every_event_type_has_exactly_one_topic_family() -> None:
    families = [family.name for family in events.TOPIC_FAMILIES for _ in family.events]
    assert len(families) == len(events.EVENT_TYPES)
    assert set().union(*(family.events for family in events.TOPIC_FAMILIES)) == events.EVENT_TYPES


def test_the_topic_table_names_the_api_scopes() -> None:
    from app import auth

    assert {family.scope for family in events.TOPIC_FAMILIES} <= set(auth.ALL_SCOPES)
    assert auth.topic_scope("ops") == auth.OPS_BREAKER
    assert (
        auth.topic_scope("schedule:2026-11-25")
        == auth.topic_scope("patients:2026-11-25")
        == auth.READ_SCHEDULE
    )
    assert auth.topic_scope("schedule:2026-02-30") is None


@pytest.mark.parametrize("event_type", sorted(events.EVENT_TYPES))
def test_every_event_lands_on_a_topic_a_socket_can_subscribe_to(event_type: str) -> None:
    from app.realtime import protocol

    topic = events.topic_of(event_type, {"date": "2026-11-25"})
    assert protocol.is_topic(topic)
    family = events.topic_family(topic)
    assert family is not None and event_type in family.events


def test_the_lua_publish_function_sends_the_one_wire_form(redis_client: redis.Redis) -> None:
    """Scripts that decide and announce in one step (tasks/sync/departure.py) send what EventPublisher
    sends."""
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    channel = keys.events_channel(redis_client)
    pubsub.subscribe(channel)
    pubsub.get_message(timeout=1)
    payload = events.dumps({"date": "2026-11-25", "hpid": "0123456789abcdef01234567"})
    script = (
        events.PUBLISH_LUA_FUNCTION
        + "return publish_event(KEYS[1], 100, 'test', ARGV[1], ARGV[2], ARGV[3], ARGV[4])"
    )
    ts = events.utc_now_iso()
    stream_id = redis_client.eval(script, 1, keys.AGENT_UPDATES, channel, events.PATIENT_REMOVED, ts, payload)
    message = pubsub.get_message(timeout=2)
    assert message is not None
    assert message["data"].encode() == events.envelope_text(stream_id, events.PATIENT_REMOVED, ts, payload)
    [(entry_id, fields)] = redis_client.xrange(keys.AGENT_UPDATES)
    assert events.entry_text(entry_id, fields) == message["data"].encode()
    pubsub.close()
