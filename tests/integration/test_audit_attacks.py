"""The audit trail against someone who can write to Redis or to the log's disk: forged records become forgery
alerts, deleted or trimmed ones a gap record, a replayed one a replay alert; a writer that falls behind makes
audited requests answer 503 instead of records being dropped; an emptied or replaced log fails
verification against its anchor. Real Redis, real files, the app in-process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from app import create_app
from config import load_settings
from tasks import audit, keys
from tests.integration.audit_support import KEY, RECORD_KEY
from tests.integration.test_audit_log import TODAY, append, drain, lines_of
from workers.audit.chain import GAP, verify_file
from workers.audit.writer import FORGED, REPLAYED, AuditWriter


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line)["record"] for line in lines_of(path)]


def test_a_record_added_without_the_producers_key_is_written_as_a_forgery(
    redis_client: redis.Redis, writer: AuditWriter, log_file: Path
) -> None:
    append(redis_client, 1)
    forged = audit.make_record(
        sub="auth0|mallory",
        action="appointments.read",
        resource={"date": TODAY},
        outcome="ok",
        request_id="x",
    )
    redis_client.xadd(keys.AUDIT, {"seq": "2", **forged, "tag": "0" * 64})  # a made-up tag
    redis_client.xadd(keys.AUDIT, {"seq": "3", **forged})  # none at all
    append(redis_client, 1, start=1)
    drain(writer)
    written = records(log_file)
    assert [r["action"] for r in written] == ["appointments.read", FORGED, FORGED, "appointments.read"]
    assert "mallory" not in log_file.read_text()  # the forged content is never written as if genuine
    assert written[1]["fields"] == sorted(["seq", *audit.FIELDS, "tag"]) and len(written[1]["digest"]) == 64
    assert verify_file(log_file, KEY).ok


def test_deleted_and_trimmed_records_leave_a_gap_record(
    redis_client: redis.Redis, writer: AuditWriter, log_file: Path
) -> None:
    ids = append(redis_client, 3)
    redis_client.xdel(keys.AUDIT, ids[1])  # removed before the writer read it
    drain(writer)
    append(redis_client, 2, start=3)
    redis_client.xtrim(keys.AUDIT, maxlen=0)  # trimmed away
    append(redis_client, 1, start=5)
    drain(writer)
    written = records(log_file)
    assert [(r["action"], r.get("seq"), r.get("missing")) for r in written] == [
        ("appointments.read", 1, None),
        (GAP, None, 1),
        ("appointments.read", 3, None),
        (GAP, None, 2),
        ("appointments.read", 6, None),
    ]
    assert verify_file(log_file, KEY).ok


def test_a_genuine_record_added_again_is_written_as_a_replay(
    redis_client: redis.Redis, writer: AuditWriter, log_file: Path
) -> None:
    append(redis_client, 2)
    copied = redis_client.xrange(keys.AUDIT)[0][1]
    drain(writer)
    redis_client.xadd(keys.AUDIT, copied)  # the same seq again
    redis_client.xadd(keys.AUDIT, {**copied, "seq": str(redis_client.incr(audit.SEQ_KEY))})  # a fresh seq
    drain(writer)
    assert [r["action"] for r in records(log_file)][2:] == [REPLAYED, REPLAYED]
    assert verify_file(log_file, KEY).ok


def test_a_writer_behind_by_the_cap_makes_audited_reads_503_and_loses_nothing(
    base_env: dict[str, str], redis_client: redis.Redis, auth_headers: dict[str, str], log_file: Path
) -> None:
    flask_app = create_app(load_settings({**base_env, "STREAM_MAXLEN": "4"}))
    client = flask_app.test_client()
    read = f"/api/v1/appointments?start={TODAY}"
    for _ in range(4):
        assert client.get(read, headers=auth_headers).status_code == 200
    refused = client.get(read, headers=auth_headers)  # no writer: the stream holds 4 unwritten records
    assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert client.post(f"/api/v1/schedule/sync?date={TODAY}", headers=auth_headers).status_code == 503
    assert not redis_client.keys("sync:*"), "the change was refused before it happened, not after"
    assert redis_client.xlen(keys.AUDIT) == 4  # nothing trimmed, nothing dropped
    dev_record_key = load_settings(base_env).audit_record_key.encode()
    catching_up = AuditWriter(redis_client, log_file, KEY, record_key=dev_record_key)
    catching_up.open()
    try:
        drain(catching_up)
    finally:
        catching_up.close()
    assert redis_client.xlen(keys.AUDIT) == 0 and len(lines_of(log_file)) == 4
    assert client.get(read, headers=auth_headers).status_code == 200


def test_an_emptied_or_replaced_log_fails_against_its_anchor(
    redis_client: redis.Redis, writer: AuditWriter, log_file: Path, tmp_path: Path
) -> None:
    append(redis_client, 3)
    drain(writer)
    writer.close()
    original = log_file.read_bytes()

    log_file.write_bytes(b"")  # emptied: it used to restart from genesis and verify
    assert not verify_file(log_file, KEY).ok
    with pytest.raises(RuntimeError, match="does not reach its anchor"):
        AuditWriter(redis_client, log_file, KEY, record_key=RECORD_KEY).open()

    # Replaced by a log made with the same key from other records: a valid chain, not this one.
    other = tmp_path / "other" / "audit.jsonl"
    forger = AuditWriter(redis_client, other, KEY, record_key=RECORD_KEY)
    forger.open()
    append(redis_client, 4, start=10)
    drain(forger)
    forger.close()
    shutil.copyfile(other, log_file)
    verdict = verify_file(log_file, KEY)
    assert not verdict.ok and verdict.broken_line == 3 and "anchor" in verdict.reason
    cli = subprocess.run(
        [sys.executable, "-m", "workers.audit", "verify", str(log_file)],
        env={"APP_ENV": "test", "AUDIT_SIGNING_KEY": KEY.decode(), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert cli.returncode == 1 and "anchor" in cli.stderr

    log_file.write_bytes(original)  # restored from its copy: verifies, and the writer resumes
    assert verify_file(log_file, KEY).ok
    resumed = AuditWriter(redis_client, log_file, KEY, record_key=RECORD_KEY)
    resumed.open()
    resumed.close()
