"""Reading ``agent_updates`` back as the exact text the ``events`` channel carried (for replays).

Each entry's text is built by ``tasks.events.entry_text``, the same code that builds what the publish script
sends, so a replayed event is byte for byte what a live socket received (tests/unit/test_relay_stream.py holds
the two in step).
"""

from __future__ import annotations

from collections.abc import Iterator

import redis

from tasks import keys
from tasks.events import entry_text, stream_id_key

PAGE = 500


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def entries_after(client: redis.Redis, since: str, *, limit: int) -> Iterator[tuple[str, bytes]]:
    """``(id, text)`` of the entries after ``since`` (exclusive), oldest first, at most ``limit``."""
    cursor = since
    left = limit
    while left > 0:
        page = client.xrange(keys.AGENT_UPDATES, min=f"({cursor}", max="+", count=min(PAGE, left))
        for entry_id, fields in page:
            cursor = _text(entry_id)
            yield cursor, entry_text(cursor, fields)
        if len(page) < min(PAGE, left):
            return
        left -= len(page)


def newest_id(client: redis.Redis) -> str:
    """The id of the stream's last entry, or ``0-0`` when it is empty."""
    last = client.xrevrange(keys.AGENT_UPDATES, count=1)
    return _text(last[0][0]) if last else "0-0"


def trimmed_past(client: redis.Redis, since: str) -> bool:
    """True if entries after ``since`` were already trimmed away (the replay from it has a hole)."""
    try:
        info = client.xinfo_stream(keys.AGENT_UPDATES)
    except redis.ResponseError:  # no stream yet: nothing was ever trimmed
        return False
    deleted = _text(info.get("max-deleted-entry-id") or info.get(b"max-deleted-entry-id") or "0-0")
    return stream_id_key(deleted) > stream_id_key(since)
