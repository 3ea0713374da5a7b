"""Audit records: who did what to which resource, when, with what outcome, appended to the ``audit`` stream.

The stream is the hand-off only: the audit writer (``python -m workers.audit run``) turns each record into a
signed, hash-chained line on disk and acknowledges it after fsync. A record names people only by their
identity-provider subject and patients only by hpid (keyed HMAC); resources are dates, hpids, task ids,
never names. The stream is capped (MAXLEN ~) so an absent writer cannot fill Redis; the consumer group
keeps unread entries' place, and an operator alert on group lag is the guard against losing trimmed ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import redis
from redis.client import Pipeline

from tasks import keys
from tasks.events import utc_now_iso

FIELDS = ("ts", "sub", "role", "action", "resource", "outcome", "request_id")
MAX_VALUE_CHARS = 256  # a record field is an id or a date; anything longer is cut, never logged whole


def make_record(
    *,
    sub: str,
    action: str,
    resource: Mapping[str, Any],
    outcome: str,
    request_id: str,
    role: str = "-",
    ts: str | None = None,
) -> dict[str, str]:
    """One record as stream fields (strings; ``resource`` as compact JSON; ``role``: the caller's roles,
    comma-separated, ``-`` when the token names none)."""
    return {
        "ts": ts or utc_now_iso(),
        "sub": sub[:MAX_VALUE_CHARS],
        "role": role[:MAX_VALUE_CHARS],
        "action": action[:MAX_VALUE_CHARS],
        "resource": json.dumps(dict(resource), separators=(",", ":"), sort_keys=True),
        "outcome": outcome[:MAX_VALUE_CHARS],
        "request_id": request_id[:MAX_VALUE_CHARS],
    }


def append(
    client: redis.Redis | Pipeline,
    *,
    sub: str,
    action: str,
    resource: Mapping[str, Any],
    outcome: str,
    request_id: str,
    maxlen: int,
    role: str = "-",
) -> Any:
    """Append one record to ``audit``: its stream id, or, given a pipeline, the pipeline (sent with it)."""
    fields = make_record(
        sub=sub, action=action, resource=resource, outcome=outcome, request_id=request_id, role=role
    )
    return client.xadd(keys.AUDIT, fields, maxlen=maxlen, approximate=True)
