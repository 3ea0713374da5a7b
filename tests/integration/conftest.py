"""Fixtures shared by the audit tests: a log file in a temporary folder and a writer open on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.integration.audit_support import KEY, RECORD_KEY
from workers.audit.writer import AuditWriter


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "audit.jsonl"


@pytest.fixture
def writer(redis_client: redis.Redis, log_file: Path) -> Iterator[AuditWriter]:
    opened = AuditWriter(redis_client, log_file, KEY, record_key=RECORD_KEY)
    opened.open()
    yield opened
    opened.close()
