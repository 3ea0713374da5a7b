"""The breaker from the outside: force-open and clear through the API (in-process, real Redis), the
providers list served stale while it is open, and a sync on a real prefork worker (3 processes) deferred by
an open breaker, then done once it is cleared.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from ulid import ULID

from config import Settings, load_settings
from tasks import events, keys, names
from tasks.breaker.errors import BreakerOpen
from tasks.breaker.store import BreakerStore
from tasks.celery_factory import create_celery
from tasks.providers import cache
from tasks.runtime import Runtime
from tasks.sync import lifecycle
from tests.integration.test_breaker import BREAKER_ENV
from tests.support.processes import start_worker, stop, wait_until
from tests.support.sync_state import wait_for_stored_state

BREAKER_URL = "/api/v1/ops/breaker"


def event_types(client: redis.Redis) -> list[dict[str, Any]]:
    return [events.envelope_from_entry(i, f) for i, f in client.xrange(keys.AGENT_UPDATES)]


def test_force_open_and_clear_through_the_api(
    client: Any,
    auth_headers: dict[str, str],
    redis_client: redis.Redis,
    simulator: Any,
    stack_env: dict[str, str],
) -> None:
    got = client.get(BREAKER_URL, headers=auth_headers)
    assert got.status_code == 200, got.json
    assert got.json["data"]["state"] == "closed"
    assert {"failures", "latency", "next_try_at", "opened_at", "last_fail"} <= got.json["data"].keys()

    forced = client.post(BREAKER_URL, json={"action": "force_open"}, headers=auth_headers)
    assert forced.status_code == 200, forced.json
    body = forced.json["data"]
    assert (body["state"], body["reason"], body["changed"]) == ("open", "forced", True)
    assert body["next_try_at"] is None and body["forced"]["by"] == "api:test|user"
    assert redis_client.exists(keys.BREAKER_FORCE_OPEN)
    assert redis_client.hget(keys.BREAKER, "state") == "open"

    # A worker's gateway now refuses, and nothing reaches Tebra.
    simulator.reset()
    runtime = Runtime(load_settings({**stack_env, **BREAKER_ENV}))
    with pytest.raises(BreakerOpen) as info:
        runtime.gateway.get_providers()
    assert info.value.retry_after_s is None  # until cleared
    assert simulator.stats()["calls"].get("GetProviders", 0) == 0

    again = client.post(BREAKER_URL, json={"action": "force_open"}, headers=auth_headers)
    assert again.json["data"]["changed"] is False  # idempotent, no second event

    cleared = client.post(BREAKER_URL, json={"action": "clear"}, headers=auth_headers)
    assert cleared.status_code == 200
    assert cleared.json["data"]["state"] == "closed"
    assert not redis_client.exists(keys.BREAKER_FORCE_OPEN)
    assert runtime.gateway.get_providers()
    assert simulator.stats()["calls"]["GetProviders"] == 1

    changes = [e for e in event_types(redis_client) if e["type"] == events.BREAKER_STATE_CHANGED]
    assert [(e["data"]["from"], e["data"]["to"]) for e in changes] == [("closed", "open"), ("open", "closed")]
    assert events.topic_of(events.BREAKER_STATE_CHANGED, changes[0]["data"]) == "ops"


@pytest.mark.parametrize(
    "body", [{"action": "explode"}, {}, {"action": "clear", "extra": 1}, {"action": None}]
)
def test_a_bad_action_is_refused(client: Any, auth_headers: dict[str, str], body: dict[str, Any]) -> None:
    answer = client.post(BREAKER_URL, json=body, headers=auth_headers)
    assert answer.status_code == 400
    assert answer.json["error"]["code"] == "VALIDATION_ERROR"


def test_the_ops_scope_is_required(client: Any, make_token: Any, redis_client: redis.Redis) -> None:
    reader = {"Authorization": f"Bearer {make_token(scopes=['read:schedule'])}"}
    assert client.get(BREAKER_URL, headers=reader).status_code == 403
    assert client.post(BREAKER_URL, json={"action": "force_open"}, headers=reader).status_code == 403
    assert not redis_client.exists(keys.BREAKER_FORCE_OPEN)


def test_providers_are_served_stale_while_the_breaker_is_open(
    client: Any, auth_headers: dict[str, str], redis_client: redis.Redis
) -> None:
    store = BreakerStore.from_settings(redis_client, Settings())
    store.force_open(by="test")
    cold = client.get("/api/v1/providers", headers=auth_headers)
    assert cold.status_code == 503 and cold.json["error"]["code"] == "CIRCUIT_OPEN"
    assert cold.headers["Retry-After"]

    cache.write(redis_client, [{"id": "1", "full_name": "Dr. A"}], ttl_s=3600)
    served = client.get("/api/v1/providers", headers=auth_headers)
    assert served.status_code == 200
    assert served.json["stale"] is True and served.json["breaker"] == "open"
    assert served.json["data"] == [{"id": "1", "full_name": "Dr. A"}]
    assert not redis_client.exists(cache.REFRESH_LOCK)  # no refresh queued against an open breaker

    store.clear()
    fresh = client.get("/api/v1/providers", headers=auth_headers)
    assert fresh.json["stale"] is False and "breaker" not in fresh.json


# --- a sync on a real prefork worker ---------------------------------------------------------------


@pytest.fixture(scope="module")
def breaker_worker(stack_env: dict[str, str], logs_dir: Path) -> Iterator[str]:
    """A prefork worker (3 processes) with the scaled breaker, on a queue of its own; yields the queue."""
    queue = f"breaker-test-{os.getpid()}"
    log = logs_dir / "breaker-worker.log"
    proc = start_worker({**stack_env, **BREAKER_ENV}, log, name="breaker-worker", concurrency=3, queues=queue)
    yield queue
    stop(proc)


def test_a_sync_meeting_an_open_breaker_is_deferred_then_succeeds_after_clear(
    breaker_worker: str, stack_env: dict[str, str], redis_client: redis.Redis, simulator: Any
) -> None:
    simulator.reset()
    simulator.set_faults(throttle=False)
    store = BreakerStore.from_settings(redis_client, Settings(breaker_open_s=1.5))
    store.force_open(by="test")
    date = (datetime.now(ZoneInfo("America/Chicago")).date() + timedelta(days=2)).isoformat()
    celery = create_celery(load_settings(stack_env), main="breaker-test-client")
    task_id = str(ULID())
    celery.send_task(names.SYNC, args=[date], task_id=task_id, queue=breaker_worker)

    deferred = wait_for_stored_state(redis_client, date, lifecycle.DEFERRED)
    assert deferred["error"] == "CIRCUIT_OPEN" and deferred["task_id"] == task_id
    # The status is recorded a moment before the event is published: wait for the event itself.
    wait_until(
        lambda: any(e["type"] == events.SCHEDULE_SYNC_DEFERRED for e in event_types(redis_client)),
        10,
        "schedule_sync_deferred",
    )
    sent = [e for e in event_types(redis_client) if e["type"] == events.SCHEDULE_SYNC_DEFERRED]
    assert sent and sent[0]["data"]["breaker"] == {"state": "open", "reason": "forced"}
    assert sent[0]["data"]["date"] == date and sent[0]["data"]["retry_in_s"] >= 1.5
    assert simulator.stats()["calls"].get("GetAppointments", 0) == 0
    assert not [e for e in event_types(redis_client) if e["type"] == events.SCHEDULE_SYNC_FAILED]

    store.clear()
    done = wait_for_stored_state(redis_client, date, lifecycle.SUCCEEDED, timeout=30)
    assert done["task_id"] == task_id
    assert simulator.stats()["calls"]["GetAppointments"] == 1
    celery.close()
