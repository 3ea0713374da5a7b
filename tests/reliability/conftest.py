"""Fixtures of the drills that need Redis behind Sentinel (tests/support/redis_ha.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_ha import SentinelGroup


@pytest.fixture(scope="module")
def sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """A primary, a replica and three sentinels of this module's own (a drill may kill the primary)."""
    found = SentinelGroup(tmp_path_factory.mktemp("sentinels"))
    try:
        yield found.start()
    finally:
        found.stop()


@pytest.fixture(scope="module")
def ha_env(sentinel_group: SentinelGroup, dev_key_path: str) -> dict[str, str]:
    """Settings that reach Redis only through the sentinels: REDIS_URL names a port where nothing listens."""
    return {
        "APP_ENV": "test",
        "REDIS_URL": "redis://127.0.0.1:1/3",
        "CELERY_BROKER_URL": "redis://127.0.0.1:1/4",
        "CELERY_RESULT_BACKEND": "redis://127.0.0.1:1/4",
        "REDIS_SENTINELS": sentinel_group.sentinels,
        "REDIS_SOCKET_TIMEOUT_S": "2",
        "REDIS_CONNECT_TIMEOUT_S": "1",
        "AUTH_MODE": "dev",
        "DEV_KEY_PATH": dev_key_path,
        "PATIENT_DETAILS_ENABLED": "false",
        "TEBRA_POLL_INTERVAL_S": "0",
        "RATE_LIMIT_CAPACITY": "100000",
    }
