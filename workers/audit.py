"""The audit writer: the ``audit`` stream, turned into signed, hash-chained JSON lines on disk.

    python -m workers.audit run            # the process `make run` starts (Procfile ``audit:``)
    python -m workers.audit verify FILE    # exit 0 if intact, 1 with the first broken line otherwise

One line per record, canonical JSON (sorted keys, no spaces)::

    {"mac": HMAC-SHA256(AUDIT_SIGNING_KEY, the line without "mac"), "n": 1, 2, 3…,
     "prev": SHA-256 of the previous line's bytes (64 zeros for the first), "record": {…}, "stream_id": "…"}

An edited line fails its MAC; a deleted, inserted or moved line breaks ``n`` and the ``prev`` chain;
``stream_id`` must keep increasing. A line cannot be forged without the key.

Delivery: the writer reads through the consumer group ``audit-writer`` (one consumer, ``writer``; a file
lock keeps a second writer out), appends a batch, fsyncs, and only then XACKs it. After a crash the
unacknowledged entries are read again (pending list first); any whose stream id is not above the file's
last line was written before the crash and is acknowledged without a second line. A torn last line (the
crash came mid-write, before fsync returned, so it was never acknowledged) is cut off and written again.
Limitation, stated in docs/security.md: cutting lines off the *end* leaves a valid shorter chain; the
writer keeps the head (``audit:head``: n and hash) in Redis for an operator to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import redis

from config import Settings, load_settings
from tasks import keys, liveness
from tasks.connections import make_redis
from tasks.logs import configure_logging

log = logging.getLogger(__name__)

GROUP = "audit-writer"
CONSUMER = "writer"
HEAD_KEY = "audit:head"
GENESIS = "0" * 64
BATCH = 200
BLOCK_MS = 1000

StreamKey = tuple[int, int]


def stream_key(stream_id: str) -> StreamKey:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def sign_line(key: bytes, n: int, stream_id: str, record: dict[str, Any], prev: str) -> bytes:
    """One signed line (without its newline)."""
    body = {"n": n, "prev": prev, "record": record, "stream_id": stream_id}
    mac = hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()
    return _canonical({**body, "mac": mac})


@dataclass(frozen=True)
class Head:
    """The file's last line: its number, hash and stream id (n 0: an empty file)."""

    n: int = 0
    hash: str = GENESIS
    stream_id: StreamKey = (0, 0)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    lines: int
    broken_line: int | None = None
    reason: str = ""


def verify_lines(lines: Iterable[bytes], key: bytes) -> Verdict:
    """Check a log's lines in order; the first broken line (1-based) and why."""
    prev, last_id, count = GENESIS, (0, 0), 0
    for number, raw in enumerate(lines, start=1):
        count = number
        if not raw.endswith(b"\n"):
            return Verdict(False, number, number, "torn line (no newline)")
        line = raw[:-1]
        try:
            entry = json.loads(line)
            body = {k: entry[k] for k in ("n", "prev", "record", "stream_id")}
            mac = str(entry["mac"])
        except (ValueError, KeyError, TypeError):
            return Verdict(False, number, number, "not an audit line")
        expected = hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(mac, expected):
            return Verdict(False, number, number, "signature does not match (edited, or another key)")
        if body["n"] != number:
            return Verdict(False, number, number, f"line number {body['n']} where {number} belongs")
        if body["prev"] != prev:
            return Verdict(
                False, number, number, "previous-line hash does not match (removed or moved lines)"
            )
        try:
            this_id = stream_key(str(body["stream_id"]))
        except ValueError:
            return Verdict(False, number, number, "bad stream id")
        if this_id <= last_id:
            return Verdict(False, number, number, "stream id does not increase")
        prev, last_id = line_hash(line), this_id
    return Verdict(True, count)


def verify_file(path: str | os.PathLike[str], key: bytes) -> Verdict:
    with open(path, "rb") as handle:
        return verify_lines(handle, key)


class AuditWriter:
    """Appends the stream's records to one file, signed and chained, acknowledging only what is on disk."""

    def __init__(self, client: redis.Redis, path: str | os.PathLike[str], key: bytes) -> None:
        self.client = client
        self.path = Path(path)
        self.key = key
        self._file: BinaryIO | None = None
        self.head = Head()
        self.stopping = False

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
        self.head = self._resume(handle)
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
        if not complete:
            return Head()
        last = complete[:-1].rsplit(b"\n", 1)[-1]
        entry = json.loads(last)
        return Head(int(entry["n"]), line_hash(last), stream_key(entry["stream_id"]))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the lock
            self._file = None

    def step(self, block_ms: int = BLOCK_MS) -> int:
        """Write and acknowledge one batch (unacknowledged entries first, then new); how many were read."""
        entries = self._read("0", block_ms=None) or self._read(">", block_ms=block_ms)
        if entries:
            self.write(entries)
            self.client.xack(keys.AUDIT, GROUP, *[entry_id for entry_id, _ in entries])
        return len(entries)

    def _read(self, start: str, block_ms: int | None) -> list[tuple[str, dict[str, str]]]:
        reply = self.client.xreadgroup(GROUP, CONSUMER, {keys.AUDIT: start}, count=BATCH, block=block_ms)
        if not reply:
            return []
        _, entries = reply[0]
        return [(str(entry_id), dict(fields or {})) for entry_id, fields in entries]

    def write(self, entries: Sequence[tuple[str, dict[str, str]]]) -> int:
        """Append the entries not yet in the file, then fsync; how many lines were added."""
        assert self._file is not None, "open() first"
        lines: list[bytes] = []
        head = self.head
        for entry_id, fields in entries:
            if stream_key(entry_id) <= head.stream_id:
                continue  # written before a crash that came between fsync and XACK
            if not fields:
                continue  # trimmed from the stream while pending: nothing left to write (acked all the same)
            line = sign_line(self.key, head.n + 1, entry_id, _record(fields), head.hash)
            lines.append(line + b"\n")
            head = Head(head.n + 1, line_hash(line), stream_key(entry_id))
        if lines:
            self._file.seek(0, os.SEEK_END)
            self._file.write(b"".join(lines))
            self._file.flush()
            os.fsync(self._file.fileno())
            self.head = head
            self.client.set(HEAD_KEY, f"{head.n} {head.hash}")
        return len(lines)

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


def _run(settings: Settings) -> int:
    writer = AuditWriter(make_redis(settings), settings.audit_log_path, settings.audit_signing_key.encode())
    writer.open()

    def stop(signum: int, _frame: Any) -> None:
        writer.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("audit writer: appending to %s from line %d", writer.path, writer.head.n + 1)
    try:
        writer.run()
    finally:
        writer.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.audit")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="append the audit stream to AUDIT_LOG_PATH until stopped")
    check = commands.add_parser("verify", help="check a log file's signatures and chain")
    check.add_argument("file")
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.command == "run":
        configure_logging(settings, "audit")  # JSON lines, like every other process
        return _run(settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    verdict = verify_file(args.file, settings.audit_signing_key.encode())
    if verdict.ok:
        print(f"ok: {verdict.lines} lines, signatures and chain intact")
        return 0
    print(f"broken at line {verdict.broken_line}: {verdict.reason}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
