"""Client messages on /ws are validated strictly: topic names, topic counts, stream ids, encodings."""

from __future__ import annotations

import pytest

from app.realtime import protocol as proto
from app.realtime.frame import close_frame, text_frame


@pytest.mark.parametrize("topic", ["ops", "schedule:2026-11-25", "patients:2024-02-29"])
def test_valid_topics(topic: str) -> None:
    assert proto.is_topic(topic)


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "OPS",
        "ops:",
        "schedule",
        "schedule:",
        "schedule:2026-13-01",
        "patients:2025-02-29",
        "schedule:26-11-25",
        "schedule:2026-11-25 ",
        "appointments:2026-11-25",
        "schedule:2026-11-25:x",
        "schedule:\uff12\uff10\uff12\uff16-11-25",
    ],
)
def test_invalid_topics(topic: str) -> None:
    assert not proto.is_topic(topic)


def test_subscribe_parses_topics_in_order_without_duplicates_and_since() -> None:
    message = proto.parse('{"type":"subscribe","topics":["ops","schedule:2026-11-25","ops"],"since":"17-3"}')
    assert message == proto.ClientMessage("subscribe", topics=("ops", "schedule:2026-11-25"), since="17-3")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\xc3\x28", proto.BAD_ENCODING),
        ("{", proto.BAD_JSON),
        ("null", proto.BAD_MESSAGE),
        ('{"type": 3}', proto.BAD_MESSAGE),
        ('{"type": "publish"}', proto.UNKNOWN_TYPE),
        ('{"type": "subscribe", "topics": [1]}', proto.BAD_MESSAGE),
        ('{"type": "subscribe", "topics": ["x"]}', proto.BAD_TOPIC),
        ('{"type": "subscribe", "topics": ["ops"], "since": "1-2-3"}', proto.BAD_SINCE),
        ('{"type": "unsubscribe", "topics": ["ops"], "since": "1-2"}', proto.BAD_SINCE),
        ('{"type": "auth"}', proto.BAD_MESSAGE),
    ],
)
def test_bad_messages_raise_the_code_to_answer(raw: str | bytes, code: str) -> None:
    with pytest.raises(proto.ProtocolError) as raised:
        proto.parse(raw)
    assert raised.value.code == code


def test_too_many_topics() -> None:
    topics = ",".join(f'"schedule:2026-01-{day:02d}"' for day in range(1, proto.MAX_TOPICS + 2))
    with pytest.raises(proto.ProtocolError) as raised:
        proto.parse(f'{{"type":"subscribe","topics":[{topics}]}}')
    assert raised.value.code == proto.TOO_MANY_TOPICS


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_text_frames_carry_the_length_in_the_right_form(size: int) -> None:
    payload = b"x" * size
    frame = text_frame(payload)
    assert frame[0] == 0x81 and not frame[1] & 0x80  # final text frame, never masked from the server
    header = 2 if size < 126 else 4 if size < 65536 else 10
    assert len(frame) == header + size and frame.endswith(payload)


def test_close_frames_carry_the_code() -> None:
    assert close_frame(1001, "bye") == b"\x88\x05\x03\xe9bye"
