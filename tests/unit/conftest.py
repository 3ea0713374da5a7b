"""Unit tests that need a real Redis get the scratch database (db 13 of the test server), not the data
database: the stack a parallel worker started for earlier integration tests (its Celery worker, the API)
lives on the data database and may still write to it, an event or a details lookup, while a unit test that
counts what is there runs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.conftest import SCRATCH_REDIS_URL, flushed_client


@pytest.fixture
def redis_client(redis_service: str) -> Iterator[redis.Redis]:
    """A client on the flushed scratch database, which no process of the suite's stacks writes to."""
    yield from flushed_client(SCRATCH_REDIS_URL)
