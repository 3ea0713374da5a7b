"""Audit records: who did what to which resource, when, with what outcome, appended to the ``audit`` stream.

The stream is the hand-off only: the audit writer (``python -m workers.audit run``) turns each record into a
signed, hash-chained line on disk, acknowledges it after fsync and deletes it. A record names people only by
their identity-provider subject and patients only by hpid (keyed HMAC); resources are dates, hpids, task
ids, never names.

The hand-off is not trusted (anyone who can write to Redis can write to it):
- each record carries ``tag``, an HMAC of its fields under ``AUDIT_RECORD_KEY`` (the producers' key, which
  the writer checks): an entry without a valid tag is written to the log as a forgery alert, never as a
  genuine record;
- each record carries ``seq``, from one counter incremented in the same script as the XADD, so stream order
  is seq order: the writer writes a gap record when numbers are missing (deleted or trimmed entries) and a
  replay alert when one comes again;
- the stream holds only what the writer has not written yet, and an append that would take it past
  ``STREAM_MAXLEN`` is refused (:class:`AuditBacklog`): the API answers 503 instead of dropping records.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

import redis
from redis.client import Pipeline

from tasks import keys
from tasks.events import utc_now_iso

FIELDS = ("ts", "sub", "role", "action", "resource", "outcome", "request_id")
MAX_VALUE_CHARS = 256  # a record field is an id or a date; anything longer is cut, never logged whole
SEQ_KEY = "audit:seq"
BACKLOG_ERROR = "AUDIT_BACKLOG"

# KEYS[1] the audit stream, KEYS[2] the sequence counter; ARGV[1] the cap, ARGV[2..] field, value pairs.
# Refuses past the cap (the writer deletes what it wrote: the length is its backlog), else numbers and adds.
_APPEND_LUA = f"""
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return redis.error_reply('{BACKLOG_ERROR} the audit writer is behind')
end
local seq = redis.call('INCR', KEYS[2])
return redis.call('XADD', KEYS[1], '*', 'seq', seq, unpack(ARGV, 2))
"""


class AuditBacklog(Exception):
    """The writer is too far behind to take another record (the stream is at STREAM_MAXLEN)."""


def is_backlog(exc: BaseException) -> bool:
    """Whether a Redis error is the append script's refusal."""
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(BACKLOG_ERROR)


def record_tag(key: bytes, fields: Mapping[str, str]) -> str:
    """The producer's HMAC of a record's fields (every field but ``seq`` and ``tag``)."""
    body = {name: value for name, value in fields.items() if name not in {"seq", "tag"}}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


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
    record_key: bytes,
    sub: str,
    action: str,
    resource: Mapping[str, Any],
    outcome: str,
    request_id: str,
    maxlen: int,
    role: str = "-",
) -> Any:
    """Append one record, tagged and numbered: its stream id, or, given a pipeline, the pipeline (sent with
    it). Past ``maxlen`` unwritten records: AuditBacklog (on a pipeline, a ResponseError at execute that
    :func:`is_backlog` recognises)."""
    fields = make_record(
        sub=sub, action=action, resource=resource, outcome=outcome, request_id=request_id, role=role
    )
    fields["tag"] = record_tag(record_key, fields)
    args: list[Any] = [maxlen]
    for name, value in fields.items():
        args += [name, value]
    script = client.register_script(_APPEND_LUA)  # on a pipeline, NOSCRIPT is handled when it is sent
    try:
        return script(keys=[keys.AUDIT, SEQ_KEY], args=args, client=client)
    except redis.ResponseError as exc:
        if is_backlog(exc):
            raise AuditBacklog(str(exc)) from None
        raise
