"""The API's ops surface in-process on a real Redis: request ids, access lines, /metrics, /ready.

/ready is held to its promise with a dependency that hangs: a listening socket that accepts connections
and never answers, which is what a wedged Redis looks like from the client side.
"""

from __future__ import annotations

import logging
import re
import socket
import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from app import create_app
from config import load_settings
from tasks import keys, liveness, names
from tasks.celery_factory import create_celery
from tasks.logs import request_id_var

BUDGET_MS = 100


@pytest.fixture
def hung_redis() -> Iterator[str]:
    """A Redis URL whose server accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


def app_with(base_env: dict[str, str], **env: str) -> Any:
    flask_app = create_app(load_settings({**base_env, **env}))
    flask_app.testing = True
    return flask_app


def test_a_request_id_is_echoed_or_made_and_logged_with_the_route(client: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="clinic_relay.access")
    given = client.get("/health", headers={"X-Request-ID": "probe-42"})
    made = client.get("/health?name=Jane+Doe")
    assert given.headers["X-Request-ID"] == "probe-42"
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])
    assert client.get("/health", headers={"X-Request-ID": "bad id"}).headers["X-Request-ID"] != "bad id"
    access = [r for r in caplog.records if r.name == "clinic_relay.access"]
    assert len(access) == 3
    first, second = access[0], access[1]
    assert (first.method, first.route, first.status) == ("GET", "/health", 200)
    assert first.ms >= 0
    assert "Jane" not in second.getMessage() and "Jane" not in str(vars(second))
    assert request_id_var.get() is None, "the id does not leak past the request"


def test_an_enqueued_task_carries_the_request_id_in_its_headers(base_env: dict[str, str]) -> None:
    from tasks import correlation

    correlation.connect()
    settings = load_settings(base_env)
    celery = create_celery(settings, main="correlation_test")
    queue = f"correlation-test-{time.monotonic_ns()}"
    broker = redis.Redis.from_url(settings.broker_url)
    token = request_id_var.set("req-abc")
    try:
        celery.send_task(names.SYNC, args=["2026-11-26"], queue=queue)
    finally:
        request_id_var.reset(token)
    try:
        import json

        message = json.loads(broker.lpop(queue))
        assert message["headers"]["request_id"] == "req-abc"
    finally:
        broker.delete(queue)
        broker.close()


def test_metrics_time_requests_by_route_and_read_streams_and_queues(
    client: Any, redis_client: redis.Redis
) -> None:
    redis_client.xadd(keys.AUDIT, {"record": "{}"})
    redis_client.xgroup_create(keys.AUDIT, "audit-writer", id="0")
    redis_client.xadd(keys.AUDIT, {"record": "{}"})
    client.get("/api/v1/schedule/status/2026-11-26")  # a route with a date in its path
    body = client.get("/metrics").get_data(as_text=True)
    assert 'route="/api/v1/schedule/status/<date>"' in body
    assert "2026-11-26" not in body, "no dates (or ids) in labels"
    assert 'clinic_relay_stream_length{stream="audit"} 2.0' in body
    assert 'clinic_relay_stream_group_lag{group="audit-writer",stream="audit"} 2.0' in body
    assert 'clinic_relay_queue_depth{queue="sync"}' in body
    assert 'clinic_relay_queue_depth{queue="details"}' in body
    assert "clinic_relay_redis_up 1.0" in body
    assert "clinic_relay_tebra_breaker_state 0.0" in body
    redis_client.set(keys.BREAKER_FORCE_OPEN, "ops")
    assert "clinic_relay_tebra_breaker_state 2.0" in client.get("/metrics").get_data(as_text=True)
    assert "\nclinic_relay_watch_last_poll_age_seconds " not in body  # no poll yet: no sample, not zero
    redis_client.hset(keys.WATCH_STATE, "last_started_at", "2026-11-26T15:00:00.000Z")
    redis_client.hset(keys.TEBRA_CLOCK, "behind_max_s", "7212.5")
    body = client.get("/metrics").get_data(as_text=True)
    assert "\nclinic_relay_watch_last_poll_age_seconds " in body
    assert "clinic_relay_tebra_clock_behind_max_seconds 7212.5" in body


def test_made_up_http_methods_are_one_other_label(client: Any, redis_client: redis.Redis) -> None:
    """40 unauthenticated requests with invented methods used to mint 40 label values (40 series)."""
    for n in range(40):
        client.open("/health", method=f"Q{n:03d}")
    client.open("/health", method="PATCH")
    body = client.get("/metrics").get_data(as_text=True)
    counts = r'clinic_relay_http_request_duration_seconds_count\{[^}]*method="([^"]+)"'
    methods = set(re.findall(counts, body))
    assert "other" in methods and "PATCH" in methods
    assert not any(method.startswith("Q") for method in methods), methods


def test_metrics_answer_loopback_only_unless_a_token_is_set(
    base_env: dict[str, str], redis_client: Any
) -> None:
    open_app = app_with(base_env).test_client()
    assert open_app.get("/metrics").status_code == 200
    remote = open_app.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert remote.status_code == 403 and remote.get_json()["error"]["code"] == "FORBIDDEN"

    guarded = app_with(base_env, METRICS_TOKEN="scrape-secret").test_client()
    remote_env = {"REMOTE_ADDR": "203.0.113.9"}
    assert guarded.get("/metrics", environ_base=remote_env).status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    ok = guarded.get("/metrics", environ_base=remote_env, headers={"Authorization": "Bearer scrape-secret"})
    assert ok.status_code == 200 and "clinic_relay_queue_depth" in ok.get_data(as_text=True)


def test_metrics_say_redis_is_down_instead_of_hanging(base_env: dict[str, str], hung_redis: str) -> None:
    hung = app_with(base_env, REDIS_URL=hung_redis, CELERY_BROKER_URL=hung_redis).test_client()
    started = time.perf_counter()
    body = hung.get("/metrics").get_data(as_text=True)
    assert time.perf_counter() - started < 1.0
    assert "clinic_relay_redis_up 0.0" in body


def test_ready_is_ready_with_a_worker_and_an_audit_writer_beating(
    client: Any, redis_client: redis.Redis
) -> None:
    redis_client.zadd(keys.WORKERS_ALIVE, {"w1@test": time.time()})
    liveness.beat_audit_writer(redis_client)
    response = client.get("/ready")
    checks = {c["name"]: c for c in response.get_json()["checks"]}
    assert response.status_code == 200, checks
    assert set(checks) == {"redis", "broker", "worker", "audit_writer"}
    assert checks["worker"]["detail"] >= 1  # the session's worker may have beaten here too
    assert checks["audit_writer"]["detail"]["age_s"] < 5


def test_ready_names_what_is_missing(client: Any, redis_client: redis.Redis) -> None:
    # The session's worker (once another test started it) beats into this database every 5 s: a beat landing
    # between the stale entry and the read makes a real live worker. Read again when that happened.
    for _ in range(3):
        redis_client.delete(keys.WORKERS_ALIVE)
        redis_client.zadd(keys.WORKERS_ALIVE, {"w1@test": time.time() - 3600})  # a stale beat
        response = client.get("/ready")
        if redis_client.zrange(keys.WORKERS_ALIVE, 0, -1) == ["w1@test"]:
            break
    checks = {c["name"]: c for c in response.get_json()["checks"]}
    assert response.status_code == 503
    assert checks["redis"]["ok"] and checks["broker"]["ok"]
    assert checks["worker"] == {**checks["worker"], "ok": False, "detail": "no worker heartbeat"}
    assert checks["audit_writer"]["detail"] == "no audit writer heartbeat"


@pytest.mark.alone  # a budget of 100 ms: measured while no other test loads the cores
@pytest.mark.parametrize("hang", ["REDIS_URL", "CELERY_BROKER_URL"])
def test_ready_answers_within_100ms_when_a_dependency_hangs(
    base_env: dict[str, str], redis_client: redis.Redis, hung_redis: str, hang: str
) -> None:
    hung = app_with(base_env, **{hang: hung_redis}).test_client()
    hung.get("/health")  # warm the app, not the probe
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        response = hung.get("/ready")
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 503
    checks = {c["name"]: c for c in response.get_json()["checks"]}
    hung_check = "redis" if hang == "REDIS_URL" else "broker"
    assert checks[hung_check]["ok"] is False
    assert checks[hung_check]["detail"] in {"timeout", "TimeoutError"}
    # The detail above shows the deadline cut the probe short. The budget holds for the typical probe; one
    # probe the scheduler delays (a busy shared machine) may overrun it, but never by a hung call's seconds.
    assert statistics.median(timings) < BUDGET_MS, f"/ready took {timings} ms"
    assert max(timings) < 10 * BUDGET_MS, f"/ready took {timings} ms"
    print(f"/ready with {hang} hung: max {max(timings):.1f} ms over {len(timings)} probes")
