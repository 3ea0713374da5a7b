"""The audit log's line format: signed, hash-chained canonical JSON lines, the anchor, and their verification.

Shared by the writer (workers/audit/writer.py), which appends such lines, and ``python -m workers.audit
verify``, which checks a file of them; workers/audit/__init__.py describes the format.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
# A gap line shares the stream id of the entry that revealed it: verification allows that one repeat.
GAP = "audit.gap"

StreamKey = tuple[int, int]


def stream_key(stream_id: str) -> StreamKey:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def sign_line(key: bytes, n: int, stream_id: str, record: dict[str, Any], prev: str) -> bytes:
    """One signed line (without its newline)."""
    body = {"n": n, "prev": prev, "record": record, "stream_id": stream_id}
    mac = hmac.new(key, canonical(body), hashlib.sha256).hexdigest()
    return canonical({**body, "mac": mac})


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
    return canonical({**body, "mac": hmac.new(key, canonical(body), hashlib.sha256).hexdigest()})


def read_anchor(path: str | os.PathLike[str], key: bytes) -> tuple[int, str]:
    """``(n, hash)`` of an anchor file; ValueError when it is unreadable or its signature does not match."""
    try:
        entry = json.loads(Path(path).read_bytes())
        n, head_hash, mac = int(entry["n"]), str(entry["hash"]), str(entry["mac"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"anchor {path} is missing or unreadable") from exc
    if not hmac.compare_digest(anchor_line(key, n, head_hash), canonical({**entry, "mac": mac})):
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
        expected = hmac.new(key, canonical(body), hashlib.sha256).hexdigest()
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
