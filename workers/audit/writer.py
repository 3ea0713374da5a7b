"""The audit writer: the ``audit`` stream read through a consumer group, appended to the log, fsynced, then
acknowledged (workers/audit/__init__.py describes the format and the delivery)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import redis

from tasks import keys, liveness
from tasks.audit import record_tag
from workers.audit.chain import (
    GAP,
    Head,
    anchor_line,
    canonical,
    default_anchor_path,
    line_hash,
    read_anchor,
    sign_line,
    stream_key,
)

log = logging.getLogger(__name__)

GROUP = "audit-writer"
CONSUMER = "writer"
HEAD_KEY = "audit:head"
BATCH = 200
BLOCK_MS = 1000
REPLAY_MEMORY = 10000  # tags of the last records written, to catch a genuine record added again
FORGED, REPLAYED = "audit.forged", "audit.replayed"


class AuditWriter:
    """Appends the stream's records to one file, signed and chained, acknowledging only what is on disk."""

    def __init__(
        self,
        client: redis.Redis,
        path: str | os.PathLike[str],
        key: bytes,
        *,
        record_key: bytes,
        anchor_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.client = client
        self.path = Path(path)
        self.key = key
        self.record_key = record_key
        self.anchor_path = Path(anchor_path) if anchor_path else default_anchor_path(path)
        self._file: BinaryIO | None = None
        self.head = Head()
        self.stopping = False
        self._recent: deque[str] = deque(maxlen=REPLAY_MEMORY)
        self._recent_set: set[str] = set()

    def open(self) -> None:
        """Lock and open the file, cut a torn tail, read the head; make the consumer group."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+b")  # noqa: SIM115 - held for the writer's lifetime, closed in close()
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RuntimeError(f"another audit writer holds {self.path}") from None
        self._file = handle
        try:
            self.head = self._resume(handle)
        except RuntimeError:
            self.close()
            raise
        try:
            self.client.xgroup_create(keys.AUDIT, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _resume(self, handle: BinaryIO) -> Head:
        handle.seek(0)
        data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):
            log.warning("audit log ends in a torn line (%d bytes); cutting it", len(data) - len(complete))
            handle.truncate(len(complete))
            os.fsync(handle.fileno())
        self._check_anchor(complete)
        if not complete:
            return Head()
        last = complete[:-1].rsplit(b"\n", 1)[-1]
        entry = json.loads(last)
        record = entry["record"] if isinstance(entry.get("record"), dict) else {}
        seq = int(record.get("seq") or record.get("last_seq") or 0)
        gap = record.get("action") == GAP
        return Head(int(entry["n"]), line_hash(last), stream_key(entry["stream_id"]), seq, gap)

    def _check_anchor(self, complete: bytes) -> None:
        """Refuse a log that does not reach its anchor: resuming would restart a replaced or emptied log's
        chain and make it verify again."""
        if not self.anchor_path.exists():
            if complete:
                log.warning("audit log has no anchor at %s yet; writing one", self.anchor_path)
            return
        try:
            n, head_hash = read_anchor(self.anchor_path, self.key)
        except ValueError as exc:
            raise RuntimeError(f"audit anchor refused: {exc}") from None
        lines = complete.split(b"\n")[:-1]
        if n and (len(lines) < n or line_hash(lines[n - 1]) != head_hash):
            raise RuntimeError(
                f"audit log {self.path} does not reach its anchor (line {n}): emptied, cut or replaced; "
                "restore it from its copy, or move both aside to start a new log"
            )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the lock
            self._file = None

    def step(self, block_ms: int = BLOCK_MS) -> int:
        """Write and acknowledge one batch (unacknowledged entries first, then new); how many were read."""
        entries = self._read("0", block_ms=None) or self._read(">", block_ms=block_ms)
        if entries:
            self.write(entries)
            done = [entry_id for entry_id, _ in entries]
            self.client.xack(keys.AUDIT, GROUP, *done)
            # Written entries leave the stream: its length is the backlog the API's appends are capped by.
            self.client.xdel(keys.AUDIT, *done)
        return len(entries)

    def _read(self, start: str, block_ms: int | None) -> list[tuple[str, dict[str, str]]]:
        reply = self.client.xreadgroup(GROUP, CONSUMER, {keys.AUDIT: start}, count=BATCH, block=block_ms)
        if not reply:
            return []
        _, entries = reply[0]
        return [(str(entry_id), dict(fields or {})) for entry_id, fields in entries]

    def write(self, entries: Sequence[tuple[str, dict[str, str]]]) -> int:
        """Append the entries not yet in the file (checked: forged, gaps, replays), then fsync and move the
        anchor; how many lines were added."""
        assert self._file is not None, "open() first"
        lines: list[bytes] = []
        head = self.head
        for entry_id, fields in entries:
            key = stream_key(entry_id)
            if key < head.stream_id or (key == head.stream_id and not head.gap):
                continue  # written before a crash that came between fsync and XACK
            if not fields:
                continue  # trimmed from the stream while pending: the next seq shows the gap
            for record, seq in self._records(fields, head.seq):
                line = sign_line(self.key, head.n + 1, entry_id, record, head.hash)
                lines.append(line + b"\n")
                head = Head(head.n + 1, line_hash(line), key, seq, record.get("action") == GAP)
        if lines:
            self._file.seek(0, os.SEEK_END)
            self._file.write(b"".join(lines))
            self._file.flush()
            os.fsync(self._file.fileno())
            self.head = head
            self._write_anchor(head)
            self.client.set(HEAD_KEY, f"{head.n} {head.hash}")
        return len(lines)

    def _records(self, fields: dict[str, str], last_seq: int) -> list[tuple[dict[str, Any], int]]:
        """The line records one stream entry becomes, each with the last genuine seq after it."""
        tag = fields.get("tag", "")
        try:
            seq = int(fields.get("seq", ""))
        except ValueError:
            seq = 0
        if not hmac.compare_digest(tag, record_tag(self.record_key, fields)) or seq <= 0:
            log.error("audit: a record without a valid tag was found in the stream (forgery)")
            digest = hashlib.sha256(canonical(dict(fields))).hexdigest()
            forged = {"action": FORGED, "outcome": "FORGED", "fields": sorted(fields), "digest": digest}
            return [({**forged, "last_seq": last_seq}, last_seq)]
        if seq <= last_seq or tag in self._recent_set:
            log.error("audit: record seq %d came again (replayed)", seq)
            replayed = {"action": REPLAYED, "outcome": "REPLAYED", "seq_seen": seq, "tag": tag}
            return [({**replayed, "last_seq": last_seq}, last_seq)]
        out: list[tuple[dict[str, Any], int]] = []
        if last_seq and seq > last_seq + 1:
            log.error(
                "audit: %d record(s) missing before seq %d (deleted or trimmed)", seq - last_seq - 1, seq
            )
            gap = {"action": GAP, "outcome": "MISSING", "missing": seq - last_seq - 1, "before_seq": seq}
            out.append(({**gap, "last_seq": last_seq}, last_seq))
        self._remember(tag)
        record = _record({name: value for name, value in fields.items() if name not in {"tag", "seq"}})
        out.append(({**record, "seq": seq}, seq))
        return out

    def _remember(self, tag: str) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(tag)
        self._recent_set.add(tag)

    def _write_anchor(self, head: Head) -> None:
        """Replace the anchor atomically (write, fsync, rename) with the new head."""
        self.anchor_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.anchor_path.with_name(self.anchor_path.name + ".tmp")
        with open(temporary, "wb") as handle:
            handle.write(anchor_line(self.key, head.n, head.hash) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.anchor_path)

    def run(self) -> None:
        """Until SIGTERM/SIGINT: read, write, fsync, acknowledge. Redis outages are waited out.

        Between batches it beats ``audit:writer:alive`` (tasks/liveness.py), which the API's /ready reads: a
        writer that hangs or dies drops out of readiness by itself.
        """
        last_beat = 0.0
        while not self.stopping:
            try:
                if time.monotonic() - last_beat >= liveness.AUDIT_WRITER_INTERVAL_S:
                    liveness.beat_audit_writer(self.client)
                    last_beat = time.monotonic()
                self.step()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("audit writer: redis unavailable (%s); retrying", type(exc).__name__)
                time.sleep(1.0)
        with contextlib.suppress(redis.RedisError):  # a clean stop leaves readiness at once
            liveness.stop_audit_writer(self.client)


def _record(fields: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = dict(fields)
    with contextlib.suppress(ValueError):  # not JSON: kept as the string it was
        record["resource"] = json.loads(fields.get("resource", "{}"))
    return record
