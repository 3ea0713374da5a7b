"""The audit writer: the ``audit`` stream, turned into signed, hash-chained JSON lines on disk.

    python -m workers.audit run            # the process `make run` starts (Procfile ``audit:``)
    python -m workers.audit verify FILE    # exit 0 if intact, 1 with the first broken line otherwise

One line per record, canonical JSON (sorted keys, no spaces)::

    {"mac": HMAC-SHA256(AUDIT_SIGNING_KEY, the line without "mac"), "n": 1, 2, 3…,
     "prev": SHA-256 of the previous line's bytes (64 zeros for the first), "record": {…}, "stream_id": "…"}

An edited line fails its MAC; a deleted, inserted or moved line breaks ``n`` and the ``prev`` chain;
``stream_id`` must keep increasing (a gap line shares the id of the entry that revealed it). A line cannot be
forged without the key.

What enters the log is checked first (tasks/audit.py): a stream entry whose ``tag`` does not verify under
``AUDIT_RECORD_KEY`` becomes an ``audit.forged`` line (its field names and a digest, never its content); a
``seq`` that skips numbers writes an ``audit.gap`` line (entries deleted or trimmed before they were read);
a ``seq`` already written, or a tag seen among the last REPLAY_MEMORY records, an ``audit.replayed`` line.
Written entries are acknowledged and deleted, so the stream's length is the writer's backlog.

Anchor: after each batch the writer replaces a signed checkpoint of the head (``n`` and hash) at
``AUDIT_ANCHOR_PATH`` (default: the log's path + ``.anchor``; best on other storage). ``verify`` requires
the log to reach the anchor's line with the anchor's hash, and the writer refuses to start on a log that
does not: an emptied, shortened or replaced log no longer verifies.

Delivery: the writer reads through the consumer group ``audit-writer`` (one consumer, ``writer``; a file
lock keeps a second writer out), appends a batch, fsyncs, and only then XACKs it. After a crash the
unacknowledged entries are read again (pending list first); any whose stream id is not above the file's
last line was written before the crash and is acknowledged without a second line. A torn last line (the
crash came mid-write, before fsync returned, so it was never acknowledged) is cut off and written again.
The writer also keeps the head in Redis (``audit:head``: n and hash) for dashboards.
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
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import redis

from config import Settings, load_settings
from tasks import keys, liveness
from tasks.audit import record_tag
from tasks.connections import make_redis
from tasks.logs import configure_logging

log = logging.getLogger(__name__)

GROUP = "audit-writer"
CONSUMER = "writer"
HEAD_KEY = "audit:head"
GENESIS = "0" * 64
BATCH = 200
BLOCK_MS = 1000
REPLAY_MEMORY = 10000  # tags of the last records written, to catch a genuine record added again
FORGED, GAP, REPLAYED = "audit.forged", "audit.gap", "audit.replayed"

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
    """The file's last line: its number, hash and stream id (n 0: an empty file), the last record seq
    written, and whether that line is a gap line (the entry that revealed the gap follows it)."""

    n: int = 0
    hash: str = GENESIS
    stream_id: StreamKey = (0, 0)
    seq: int = 0
    gap: bool = False


def anchor_line(key: bytes, n: int, head_hash: str) -> bytes:
    """The signed checkpoint of a log's head."""
    body = {"hash": head_hash, "n": n}
    return _canonical({**body, "mac": hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()})


def read_anchor(path: str | os.PathLike[str], key: bytes) -> tuple[int, str]:
    """``(n, hash)`` of an anchor file; ValueError when it is unreadable or its signature does not match."""
    try:
        entry = json.loads(Path(path).read_bytes())
        n, head_hash, mac = int(entry["n"]), str(entry["hash"]), str(entry["mac"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"anchor {path} is missing or unreadable") from exc
    if not hmac.compare_digest(anchor_line(key, n, head_hash), _canonical({**entry, "mac": mac})):
        raise ValueError(f"anchor {path}: signature does not match")
    return n, head_hash


def default_anchor_path(log_path: str | os.PathLike[str], configured: str = "") -> Path:
    return Path(configured) if configured else Path(f"{log_path}.anchor")


@dataclass(frozen=True)
class Verdict:
    ok: bool
    lines: int
    broken_line: int | None = None
    reason: str = ""


def verify_lines(lines: Iterable[bytes], key: bytes, anchor: tuple[int, str] | None = None) -> Verdict:
    """Check a log's lines in order, and that it reaches ``anchor`` (n, hash) when given; the first broken
    line (1-based) and why."""
    prev, last_id, count, after_gap = GENESIS, (0, 0), 0, False
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
        if this_id < last_id or (this_id == last_id and not after_gap):
            return Verdict(False, number, number, "stream id does not increase")
        prev, last_id = line_hash(line), this_id
        after_gap = isinstance(body["record"], dict) and body["record"].get("action") == GAP
        if anchor is not None and number == anchor[0] and prev != anchor[1]:
            return Verdict(False, number, number, "line does not match the anchor (the log was replaced)")
    if anchor is not None and count < anchor[0]:
        return Verdict(
            False, count, count + 1, f"the log ends before its anchor's line {anchor[0]} (emptied or cut)"
        )
    return Verdict(True, count)


def verify_file(
    path: str | os.PathLike[str], key: bytes, anchor_path: str | os.PathLike[str] | None = None
) -> Verdict:
    """Verify a log file against its anchor (``anchor_path``, default the log's path + ``.anchor``)."""
    try:
        anchor = read_anchor(anchor_path or default_anchor_path(path), key)
    except ValueError as exc:
        return Verdict(False, 0, 0, str(exc))
    with open(path, "rb") as handle:
        return verify_lines(handle, key, anchor)


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
            digest = hashlib.sha256(_canonical(dict(fields))).hexdigest()
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


def _run(settings: Settings) -> int:
    writer = AuditWriter(
        make_redis(settings),
        settings.audit_log_path,
        settings.audit_signing_key.encode(),
        record_key=settings.audit_record_key.encode(),
        anchor_path=settings.audit_anchor_path or None,
    )
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
    check = commands.add_parser("verify", help="check a log file's signatures, chain and anchor")
    check.add_argument("file")
    check.add_argument("--anchor", help="the anchor file (default: AUDIT_ANCHOR_PATH, else FILE.anchor)")
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.command == "run":
        configure_logging(settings, "audit")  # JSON lines, like every other process
        return _run(settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    anchor = args.anchor or (settings.audit_anchor_path if args.file == settings.audit_log_path else None)
    verdict = verify_file(args.file, settings.audit_signing_key.encode(), anchor or None)
    if verdict.ok:
        print(f"ok: {verdict.lines} lines, signatures and chain intact")
        return 0
    print(f"broken at line {verdict.broken_line}: {verdict.reason}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
