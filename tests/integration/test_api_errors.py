"""Every bad request gets a clear JSON error in the envelope, and nothing is queued or written."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
import redis

from config import load_settings
from tests.conftest import TEST_BROKER_URL

TODAY = date.today()


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    body = response.get_json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert "Traceback" not in response.get_data(as_text=True)
    assert body["timestamp"]
    return dict(body)


@pytest.fixture
def client(app: Any, auth_headers: dict[str, str]) -> Any:
    """Flask's test client sending a token with every scope: these tests are about errors, not auth."""
    test_client = app.test_client()
    test_client.environ_base["HTTP_AUTHORIZATION"] = auth_headers["Authorization"]
    return test_client


def broker_queue_length() -> int:
    return int(redis.Redis.from_url(TEST_BROKER_URL).llen("sync"))


@pytest.mark.parametrize(
    "query",
    [
        "date=2026-13-01",
        "date=yesterday",
        "date=2026-1-5",
        "date=",
        f"date={(TODAY + timedelta(days=800)).isoformat()}",
        "date=2026-11-25&clinic=1",
    ],
)
def test_bad_sync_requests_queue_nothing(client: Any, redis_client: redis.Redis, query: str) -> None:
    queued = broker_queue_length()
    body = assert_error(client.post(f"/api/v1/schedule/sync?{query}"), 400, "VALIDATION_ERROR")
    assert body["error"]["details"]
    assert broker_queue_length() == queued
    assert redis_client.keys("sync:*") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("", "start"),
        ("start=2026-11-01&end=2026-10-01", "end"),
        (f"start={TODAY.isoformat()}&end={(TODAY + timedelta(days=31)).isoformat()}", "end"),
        ("start=tomorrow", "start"),
    ],
)
def test_bad_appointment_ranges(client: Any, query: str, field: str) -> None:
    body = assert_error(client.get(f"/api/v1/appointments?{query}"), 400, "VALIDATION_ERROR")
    assert field in body["error"]["details"]


def test_a_31_day_range_is_accepted(client: Any) -> None:
    end = TODAY + timedelta(days=30)
    response = client.get(f"/api/v1/appointments?start={TODAY.isoformat()}&end={end.isoformat()}")
    assert response.status_code == 200
    assert response.get_json()["data"] == []


def test_unknown_route_and_method(client: Any) -> None:
    assert_error(client.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
    response = client.delete("/api/v1/schedule/sync")
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in response.headers["Allow"]


def test_unknown_task_and_status(client: Any) -> None:
    assert_error(client.get("/api/v1/tasks/01JD0000000000000000000000"), 404, "NOT_FOUND")
    assert_error(client.get("/api/v1/tasks/not a task"), 400, "VALIDATION_ERROR")
    assert_error(client.get(f"/api/v1/schedule/status/{TODAY.isoformat()}"), 404, "NOT_FOUND")
    assert_error(client.get("/api/v1/schedule/status/2026-02-30"), 400, "VALIDATION_ERROR")


def test_oversized_body_is_refused(client: Any) -> None:
    response = client.post(
        f"/api/v1/schedule/sync?date={TODAY.isoformat()}",
        data=b"x" * (128 * 1024),
        content_type="application/json",
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_redis_down_is_a_503_not_a_crash(base_env: dict[str, str], auth_headers: dict[str, str]) -> None:
    from app import create_app

    down = create_app(
        load_settings(
            {**base_env, "REDIS_URL": "redis://127.0.0.1:1/0", "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}
        )
    )
    client = down.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = auth_headers["Authorization"]
    response = client.post(f"/api/v1/schedule/sync?date={TODAY.isoformat()}")
    assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert response.headers["Retry-After"]
    assert_error(client.get(f"/api/v1/appointments?start={TODAY.isoformat()}"), 503, "SERVICE_UNAVAILABLE")
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert {c["name"]: c["ok"] for c in ready.get_json()["checks"]}["redis"] is False
    assert client.get("/health").status_code == 200
