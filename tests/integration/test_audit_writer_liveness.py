"""The audit writer tells /ready it is alive, and stops saying so when it stops."""

from __future__ import annotations

import signal
from pathlib import Path

import redis

from tasks import liveness
from tests.support.processes import BIN, spawn, stop, wait_until


def test_the_writer_beats_while_it_runs_and_clears_on_a_clean_stop(
    base_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path, logs_dir: Path
) -> None:
    log = logs_dir / "audit-liveness.log"
    env = {**base_env, "AUDIT_LOG_PATH": str(tmp_path / "audit.jsonl")}
    writer = spawn([str(BIN / "python"), "-m", "workers.audit", "run"], env, log)
    try:
        wait_until(
            lambda: redis_client.exists(liveness.AUDIT_WRITER_ALIVE) == 1, 15, "audit beat", writer, log
        )
        assert 0 < redis_client.ttl(liveness.AUDIT_WRITER_ALIVE) <= liveness.AUDIT_WRITER_TTL_S
    finally:
        stop(writer, sig=signal.SIGTERM)
    assert writer.returncode == 0
    assert redis_client.exists(liveness.AUDIT_WRITER_ALIVE) == 0
    assert '"process": "audit"' in log.read_text()  # the same JSON lines as every other process
