"""Heartbeats other processes read to tell that a process is alive (the API's ``/ready``).

Workers: ``workers:alive`` (tasks/keys.py), a sorted set of hostname -> last beat, written by
workers/heartbeat.py. The audit writer: ``audit:writer:alive``, a string holding the unix time of its last
beat, written with a TTL every few seconds; the key's presence is the signal, so a writer that dies (or is
stopped) drops out of readiness within ``AUDIT_WRITER_TTL_S`` without anyone cleaning up.
"""

from __future__ import annotations

import time

import redis

AUDIT_WRITER_ALIVE = "audit:writer:alive"
AUDIT_WRITER_INTERVAL_S = 5.0  # how often the writer beats
AUDIT_WRITER_TTL_S = 20  # how long a beat counts: a few missed beats, not one slow loop


def beat_audit_writer(client: redis.Redis, now: float | None = None) -> None:
    """Record that the audit writer is alive (call every ``AUDIT_WRITER_INTERVAL_S``)."""
    client.set(AUDIT_WRITER_ALIVE, f"{time.time() if now is None else now:.3f}", ex=AUDIT_WRITER_TTL_S)


def stop_audit_writer(client: redis.Redis) -> None:
    """Drop the beat on a clean stop, so readiness says so at once."""
    client.delete(AUDIT_WRITER_ALIVE)
