"""The token bucket on a real Redis: 429 with Retry-After, per-route costs, X-Forwarded-For trust, Redis down
→ 503; and the security headers and CORS allow-list on the same app."""

from __future__ import annotations

import threading
import time
from datetime import date
from typing import Any

import pytest
import redis

from app import create_app
from app.ratelimit import KEY_PREFIX, LEASE_S, LEASE_TOKENS, RateLimiter, client_ip
from config import load_settings

TODAY = date.today().isoformat()
READ = f"/api/v1/appointments?start={TODAY}"

# A read's lease keeps its spare tokens for 1 s (app/ratelimit.py, LEASE_S): counts of answers hold only
# while the reads of a test take less, so the file runs while no other test loads the cores.
pytestmark = pytest.mark.alone
SYNC = f"/api/v1/schedule/sync?date={TODAY}"


@pytest.fixture
def make_app(base_env: dict[str, str], redis_client: redis.Redis, auth_headers: dict[str, str]) -> Any:
    """Build the app with setting overrides; its test client sends a token with every scope."""

    def build(**overrides: Any) -> Any:
        flask_app = create_app(load_settings(base_env, **overrides))
        client = flask_app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = auth_headers["Authorization"]
        return client

    return build


def test_the_bucket_empties_then_answers_429_with_retry_after(make_app: Any) -> None:
    client = make_app(rate_limit_capacity=5, rate_limit_refill_per_s=0.5)
    assert [client.get(READ).status_code for _ in range(5)] == [200] * 5
    refused = client.get(READ)
    assert refused.status_code == 429
    body = refused.get_json()
    assert body["success"] is False and body["error"]["code"] == "RATE_LIMIT"
    assert refused.headers["Retry-After"] == "2"  # one token at 0.5/s
    assert body["error"]["details"]["retry_after_s"] == 2


def test_a_sync_costs_more_than_a_read(make_app: Any) -> None:
    client = make_app(rate_limit_capacity=15, rate_limit_refill_per_s=0.01)
    assert client.post(SYNC).status_code == 202  # 10 tokens
    assert [client.get(READ).status_code for _ in range(5)] == [200] * 5  # 5 more: empty
    assert client.get(READ).status_code == 429
    assert client.post(SYNC).status_code == 429


def test_buckets_are_per_user(make_app: Any, make_token: Any) -> None:
    client = make_app(rate_limit_capacity=2, rate_limit_refill_per_s=0.01)
    assert [client.get(READ).status_code for _ in range(3)] == [200, 200, 429]
    other = {"Authorization": f"Bearer {make_token(sub='test|other-user')}"}
    assert client.get(READ, headers=other).status_code == 200


def test_bad_tokens_are_rate_limited_too(make_app: Any) -> None:
    client = make_app(rate_limit_capacity=3, rate_limit_refill_per_s=0.01)
    forged = {"Authorization": "Bearer forged.token.here"}
    assert [client.get(READ, headers=forged).status_code for _ in range(4)] == [401, 401, 401, 429]


def test_x_forwarded_for_only_through_trusted_proxies(make_app: Any) -> None:
    untrusting = make_app(rate_limit_capacity=2, rate_limit_refill_per_s=0.01, trusted_proxies=0)
    for spoofed in ("1.1.1.1", "2.2.2.2"):
        untrusting.get(READ, headers={"X-Forwarded-For": spoofed})
    assert untrusting.get(READ, headers={"X-Forwarded-For": "3.3.3.3"}).status_code == 429  # one bucket

    behind_proxy = make_app(rate_limit_capacity=2, rate_limit_refill_per_s=0.01, trusted_proxies=1)
    for _ in range(2):
        assert behind_proxy.get(READ, headers={"X-Forwarded-For": "9.9.9.9, 10.0.0.1"}).status_code == 200
    assert behind_proxy.get(READ, headers={"X-Forwarded-For": "9.9.9.9, 10.0.0.1"}).status_code == 429
    # A client forging its own left-hand entries still lands in the bucket of the address the proxy saw.
    assert behind_proxy.get(READ, headers={"X-Forwarded-For": "6.6.6.6, 10.0.0.1"}).status_code == 429
    assert behind_proxy.get(READ, headers={"X-Forwarded-For": "10.0.0.2"}).status_code == 200


def test_client_ip_rules() -> None:
    assert client_ip("10.0.0.9", "1.2.3.4", 0) == "10.0.0.9"
    assert client_ip("10.0.0.9", "1.2.3.4", 1) == "1.2.3.4"
    assert client_ip("10.0.0.9", "evil, 1.2.3.4, 172.16.0.1", 2) == "1.2.3.4"
    assert client_ip("10.0.0.9", "1.2.3.4", 2) == "10.0.0.9"  # fewer hops than proxies: not through them
    assert client_ip("10.0.0.9", None, 1) == "10.0.0.9"


def test_the_lua_bucket_is_atomic_under_concurrency(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, capacity=20, refill_per_s=0.001)
    allowed: list[bool] = []
    lock = threading.Lock()

    def hammer() -> None:
        client = redis.Redis.from_url(_url(redis_client))
        own = RateLimiter(client, capacity=20, refill_per_s=0.001)
        for _ in range(10):
            decision = own.take("1.2.3.4|racer", 1)
            with lock:
                allowed.append(decision.allowed)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 20 and len(allowed) == 80
    assert not limiter.take("1.2.3.4|racer", 1).allowed


def test_a_read_leases_spare_tokens_that_only_its_process_spends(redis_client: redis.Redis) -> None:
    identity = "1.2.3.4|leaser"
    one = RateLimiter(redis_client, capacity=25, refill_per_s=0.001)
    other = RateLimiter(redis_client, capacity=25, refill_per_s=0.001)  # a second API process
    assert one.take_read(identity).allowed
    left = float(redis_client.hget(KEY_PREFIX + identity, "tokens") or 0)
    assert left == pytest.approx(25 - LEASE_TOKENS, abs=0.1)  # the lease came out of the shared bucket
    assert all(one.take_read(identity).allowed for _ in range(LEASE_TOKENS - 1))
    assert float(redis_client.hget(KEY_PREFIX + identity, "tokens") or 0) == pytest.approx(left, abs=0.1)
    # The other process has only what is left in the bucket: never more than the bucket allows in all.
    assert sum(other.take_read(identity).allowed for _ in range(30)) == 25 - LEASE_TOKENS
    assert not one.take_read(identity).allowed


def test_spare_tokens_of_a_lease_expire(redis_client: redis.Redis) -> None:
    identity = "1.2.3.4|slow-reader"
    limiter = RateLimiter(redis_client, capacity=LEASE_TOKENS + 2, refill_per_s=0.001)
    assert limiter.take_read(identity).allowed  # leases LEASE_TOKENS, spends one
    time.sleep(LEASE_S + 0.1)  # the spare ones are lost, not spent late
    assert [limiter.take_read(identity).allowed for _ in range(3)] == [True, True, False]


def _url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs['db']}"


def test_redis_down_is_503_never_fail_open(base_env: dict[str, str], auth_headers: dict[str, str]) -> None:
    down = create_app(load_settings({**base_env, "REDIS_URL": "redis://127.0.0.1:1/0"})).test_client()
    response = down.get(READ, headers=auth_headers)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert response.headers["Retry-After"]
    assert down.get("/health").status_code == 200


# Security headers and CORS.


def test_security_headers_on_every_response(make_app: Any) -> None:
    client = make_app()
    for response in (
        client.get("/health"),
        client.get(READ),
        client.get("/api/v1/nope"),
        client.get(READ, headers={"Authorization": ""}),
    ):
        assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert client.get(READ).headers["Cache-Control"] == "no-store"


def test_cors_allow_list(make_app: Any) -> None:
    client = make_app(cors_origins="https://board.clinic.example, https://admin.clinic.example/")
    allowed = client.get(READ, headers={"Origin": "https://board.clinic.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://board.clinic.example"
    assert "Origin" in allowed.headers["Vary"]
    other = client.get(READ, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = client.options(
        SYNC,
        headers={
            "Origin": "https://admin.clinic.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
        environ_base={"HTTP_AUTHORIZATION": ""},
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://admin.clinic.example"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    no_cors = make_app(cors_origins="")
    assert (
        "Access-Control-Allow-Origin"
        not in no_cors.get(READ, headers={"Origin": "https://x.example"}).headers
    )
