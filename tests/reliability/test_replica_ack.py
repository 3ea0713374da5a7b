"""Acknowledged means kept: a status change and an accepted sync answer 2xx only once a replica has them.

With REDIS_SENTINELS (a real primary, replica and three sentinels), the 2xx of a PATCH or a sync request
comes after ``WAIT 1 <REDIS_WAIT_REPLICA_MS>``: the replica, read directly, already holds the change, the
queue entry and the audit record when the answer arrives. With the replica stopped (SIGSTOP: connected but
silent, the way a stalled replica looks) the same requests answer 503 with Retry-After, and the audit trail
says so. On a single Redis (no sentinels) no WAIT is ever sent.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from app import create_app
from config import load_settings
from tasks import connections, keys
from tasks.patients import flow
from tests.support.patients import seed_day
from tests.support.redis_ha import SentinelGroup

DATE = (datetime.now(UTC).date() + timedelta(days=9)).isoformat()  # any day: no Tebra involved


@pytest.fixture
def stopped_replica(sentinel_group: SentinelGroup) -> Iterator[None]:
    """The replica frozen for the test's length: connected, acknowledging nothing."""
    pid = sentinel_group.procs[sentinel_group.replica_port].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def audit_outcomes(client: redis.Redis, request_id: str) -> list[str]:
    return [
        fields["outcome"] for _, fields in client.xrange(keys.AUDIT) if fields["request_id"] == request_id
    ]


def patch(api: Any, hpid: str, headers: dict[str, str], request_id: str) -> Any:
    return api.patch(
        f"/api/v1/patients/{hpid}/status?date={DATE}",
        json={"status": flow.CONFIRMED},
        headers={**headers, "X-Request-ID": request_id},
    )


def sync(api: Any, headers: dict[str, str], request_id: str) -> Any:
    return api.post(f"/api/v1/schedule/sync?date={DATE}", headers={**headers, "X-Request-ID": request_id})


@pytest.fixture(scope="module")
def ha(sentinel_group: SentinelGroup, ha_env: dict[str, str]) -> tuple[Any, redis.Redis, list[str]]:
    """The app (in-process) on the sentinels, the replica's data database, and three seeded patients."""
    settings = load_settings({**ha_env, "REDIS_WAIT_REPLICA_MS": "300"})
    data = connections.make_redis(settings)
    hpids = seed_day(data, settings, DATE, [flow.SCHEDULED] * 3, prefix="ack")
    replica = redis.Redis(port=sentinel_group.replica_port, db=3, decode_responses=True, socket_timeout=5)
    return create_app(settings).test_client(), replica, hpids


def test_a_2xx_means_the_replica_already_has_the_change_the_queue_entry_and_the_record(
    ha: tuple[Any, redis.Redis, list[str]], sentinel_group: SentinelGroup, auth_headers: dict[str, str]
) -> None:
    api, replica, hpids = ha
    changed = patch(api, hpids[0], auth_headers, "ack-patch-1")
    assert changed.status_code == 200, changed.get_json()
    # Read from the replica at once: WAIT returned only after the replica had it all.
    assert replica.hget(keys.patient(hpids[0], DATE), "status") == flow.CONFIRMED
    assert audit_outcomes(replica, "ack-patch-1") == ["ok"]

    accepted = sync(api, auth_headers, "ack-sync-1")
    assert accepted.status_code == 202, accepted.get_json()
    broker_replica = redis.Redis(port=sentinel_group.replica_port, db=4, socket_timeout=5)
    assert broker_replica.llen("sync") == 1  # no worker runs here: the message waits on both servers
    assert audit_outcomes(replica, "ack-sync-1") == ["ok"]


def test_without_a_replica_in_time_the_answer_is_503_and_the_audit_says_so(
    ha: tuple[Any, redis.Redis, list[str]], stopped_replica: None, auth_headers: dict[str, str]
) -> None:
    api, _, hpids = ha
    for response, request_id in (
        (patch(api, hpids[1], auth_headers, "ack-patch-2"), "ack-patch-2"),
        (sync(api, auth_headers, "ack-sync-2"), "ack-sync-2"),
    ):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "2"
        assert response.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        data = connections.make_redis(api.application.config["CLINIC_SETTINGS"])
        assert audit_outcomes(data, request_id) == ["ok", "SERVICE_UNAVAILABLE"]


def test_a_single_redis_never_waits(
    client: Any, redis_client: redis.Redis, auth_headers: dict[str, str]
) -> None:
    hpid = seed_day(redis_client, client.application.config["CLINIC_SETTINGS"], DATE, [flow.SCHEDULED])[0]
    waits = redis_client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)
    response = patch(client, hpid, auth_headers, "single-node")
    assert response.status_code == 200
    assert redis_client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0) == waits
