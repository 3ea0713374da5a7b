"""The audit trail: API accesses land in the ``audit`` stream; the writer makes signed, chained lines that
`verify` checks; any edit, deletion, insertion or reordering is caught at its line; a crash between the
write and the acknowledgement neither loses nor duplicates a line. Real Redis, real files, real processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import redis

from tasks import audit, keys
from tests.integration.audit_support import KEY, RECORD_KEY
from tests.support.processes import BIN, spawn, stop, wait_until
from workers.audit.chain import verify_file
from workers.audit.writer import GROUP, HEAD_KEY, AuditWriter

TODAY = date.today().isoformat()


def append(client: redis.Redis, n: int, start: int = 0) -> list[str]:
    return [
        audit.append(
            client,
            record_key=RECORD_KEY,
            sub=f"auth0|user-{i}",
            action="appointments.read",
            resource={"date": TODAY, "hpid": f"{i:024x}"},
            outcome="ok",
            request_id=f"req-{i}",
            maxlen=10000,
        )
        for i in range(start, start + n)
    ]


def drain(writer: AuditWriter) -> None:
    while writer.step(block_ms=50):
        pass


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_records_become_signed_chained_lines(
    redis_client: redis.Redis, writer: AuditWriter, log_file: Path
) -> None:
    ids = append(redis_client, 5)
    drain(writer)
    lines = [json.loads(line) for line in lines_of(log_file)]
    assert [line["stream_id"] for line in lines] == ids
    assert [line["n"] for line in lines] == [1, 2, 3, 4, 5]
    assert lines[0]["record"]["sub"] == "auth0|user-0" and lines[0]["record"]["resource"]["date"] == TODAY
    assert verify_file(log_file, KEY).ok
    assert redis_client.xpending(keys.AUDIT, GROUP)["pending"] == 0  # all acknowledged
    assert redis_client.get(HEAD_KEY).startswith("5 ")


def _tamper_edit(lines: list[bytes]) -> list[bytes]:
    entry = json.loads(lines[2])
    entry["record"]["outcome"] = "FORBIDDEN"
    lines[2] = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    return lines


def _tamper_delete(lines: list[bytes]) -> list[bytes]:
    del lines[2]
    return lines


def _tamper_insert(lines: list[bytes]) -> list[bytes]:
    lines.insert(2, lines[1])
    return lines


def _tamper_reorder(lines: list[bytes]) -> list[bytes]:
    lines[2], lines[3] = lines[3], lines[2]
    return lines


def _tamper_bytes(lines: list[bytes]) -> list[bytes]:
    lines[2] = lines[2].replace(b"user-2", b"user-9")
    return lines


@pytest.mark.parametrize(
    ("tamper", "broken_line"),
    [(_tamper_edit, 3), (_tamper_delete, 3), (_tamper_insert, 3), (_tamper_reorder, 3), (_tamper_bytes, 3)],
    ids=["edit", "delete", "insert", "reorder", "byte-edit"],
)
def test_verify_finds_the_first_broken_line(
    redis_client: redis.Redis, writer: AuditWriter, log_file: Path, tamper: Any, broken_line: int
) -> None:
    append(redis_client, 6)
    drain(writer)
    log_file.write_bytes(b"".join(tamper(lines_of(log_file))))
    verdict = verify_file(log_file, KEY)
    assert not verdict.ok and verdict.broken_line == broken_line, verdict
    cli = subprocess.run(
        [sys.executable, "-m", "workers.audit", "verify", str(log_file)],
        env={**os.environ, "AUDIT_SIGNING_KEY": KEY.decode()},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert cli.returncode == 1 and f"line {broken_line}" in cli.stderr


def test_verify_cli_accepts_an_intact_log_and_refuses_another_key(
    redis_client: redis.Redis, writer: AuditWriter, log_file: Path
) -> None:
    append(redis_client, 3)
    drain(writer)
    env = {**os.environ, "AUDIT_SIGNING_KEY": KEY.decode()}
    ok = subprocess.run(
        [sys.executable, "-m", "workers.audit", "verify", str(log_file)],
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    other = subprocess.run(
        [sys.executable, "-m", "workers.audit", "verify", str(log_file)],
        env={**env, "AUDIT_SIGNING_KEY": "another-key"},
        capture_output=True,
        timeout=30,
    )
    assert other.returncode == 1


def test_a_crash_between_write_and_ack_writes_no_duplicate(
    redis_client: redis.Redis, writer: AuditWriter, log_file: Path
) -> None:
    append(redis_client, 3)
    drain(writer)
    append(redis_client, 4, start=3)
    # What a crash after fsync and before XACK leaves: the lines on disk, the entries still pending.
    reply = redis_client.xreadgroup(GROUP, "writer", {keys.AUDIT: ">"}, count=100)
    entries = [(entry_id, fields) for entry_id, fields in reply[0][1]]
    assert writer.write(entries) == 4
    writer.close()
    assert redis_client.xpending(keys.AUDIT, GROUP)["pending"] == 4

    restarted = AuditWriter(redis_client, log_file, KEY, record_key=RECORD_KEY)
    restarted.open()
    try:
        append(redis_client, 2, start=7)
        drain(restarted)
    finally:
        restarted.close()
    lines = [json.loads(line) for line in lines_of(log_file)]
    assert [line["n"] for line in lines] == list(range(1, 10))
    assert len({line["stream_id"] for line in lines}) == 9
    assert redis_client.xpending(keys.AUDIT, GROUP)["pending"] == 0
    assert verify_file(log_file, KEY).ok


def test_a_torn_last_line_is_cut_and_rewritten(
    redis_client: redis.Redis, writer: AuditWriter, log_file: Path
) -> None:
    append(redis_client, 2)
    drain(writer)
    append(redis_client, 1, start=2)
    reply = redis_client.xreadgroup(GROUP, "writer", {keys.AUDIT: ">"}, count=100)
    writer.close()
    # The crash came mid-write: half a line on disk, never fsynced as a whole, never acknowledged.
    with open(log_file, "ab") as handle:
        handle.write(b'{"mac":"abc","n":3,"prev')
    assert not verify_file(log_file, KEY).ok
    restarted = AuditWriter(redis_client, log_file, KEY, record_key=RECORD_KEY)
    restarted.open()
    try:
        drain(restarted)
    finally:
        restarted.close()
    lines = [json.loads(line) for line in lines_of(log_file)]
    assert [line["stream_id"] for line in lines][-1] == reply[0][1][0][0]
    assert verify_file(log_file, KEY).ok and verify_file(log_file, KEY).lines == 3


def test_a_second_writer_on_the_same_file_is_refused(
    redis_client: redis.Redis, writer: AuditWriter, log_file: Path
) -> None:
    with pytest.raises(RuntimeError, match="another audit writer"):
        AuditWriter(redis_client, log_file, KEY, record_key=RECORD_KEY).open()


def test_the_writer_process_survives_kill_9_without_loss_or_duplicates(
    redis_client: redis.Redis, base_env: dict[str, str], tmp_path: Path
) -> None:
    log_file = tmp_path / "audit.jsonl"
    env = {
        **base_env,
        "AUDIT_SIGNING_KEY": KEY.decode(),
        "AUDIT_RECORD_KEY": RECORD_KEY.decode(),
        "AUDIT_LOG_PATH": str(log_file),
    }
    total = 0
    for round_ in range(4):
        writer_log = tmp_path / f"writer-{round_}.log"
        proc = spawn([str(BIN / "python"), "-m", "workers.audit", "run"], env, writer_log)
        wait_until(
            lambda log=writer_log: "appending to" in log.read_text(), 30, "audit writer", proc, writer_log
        )
        for i in range(200):  # the writer works through these while they arrive; it dies in the middle
            append(redis_client, 1, start=total)
            total += 1
            if i == 100 + 25 * round_:
                os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    proc = spawn([str(BIN / "python"), "-m", "workers.audit", "run"], env, tmp_path / "writer-last.log")
    try:
        wait_until(
            lambda: log_file.exists() and len(lines_of(log_file)) >= total,
            30,
            "audit writer catching up",
            proc,
            tmp_path / "writer-last.log",
        )
    finally:
        stop(proc)
    lines = [json.loads(line) for line in lines_of(log_file)]
    assert len(lines) == total
    assert sorted(line["record"]["request_id"] for line in lines) == sorted(f"req-{i}" for i in range(total))
    assert verify_file(log_file, KEY).ok
    assert redis_client.xpending(keys.AUDIT, GROUP)["pending"] == 0


# The API's side: what reaches the stream.


def test_api_access_and_state_changes_are_audited(
    client: Any, redis_client: redis.Redis, make_token: Any
) -> None:
    headers = {"Authorization": f"Bearer {make_token(sub='auth0|nurse-7')}", "X-Request-ID": "req-abc"}
    assert client.get(f"/api/v1/appointments?start={TODAY}", headers=headers).status_code == 200
    assert client.post(f"/api/v1/schedule/sync?date={TODAY}", headers=headers).status_code == 202
    reader = {"Authorization": f"Bearer {make_token(scopes=['read:schedule'], sub='auth0|clerk-2')}"}
    assert client.post(f"/api/v1/schedule/sync?date={TODAY}", headers=reader).status_code == 403
    records = [fields for _, fields in redis_client.xrange(keys.AUDIT)]
    assert [(r["sub"], r["action"], r["outcome"]) for r in records] == [
        ("auth0|nurse-7", "appointments.read", "ok"),
        ("auth0|nurse-7", "schedule.sync_requested", "ok"),
        ("auth0|clerk-2", "schedule.sync_requested", "FORBIDDEN"),
    ]
    assert records[0]["request_id"] == "req-abc"
    assert json.loads(records[0]["resource"]) == {"method": "GET", "start": TODAY}
    sync_resource = json.loads(records[1]["resource"])
    assert (
        sync_resource["date"] == TODAY and sync_resource["task_id"] and sync_resource["deduplicated"] is False
    )
    assert all(set(r) == {*audit.FIELDS, "seq", "tag"} for r in records)
    assert [int(r["seq"]) for r in records] == [1, 2, 3]
