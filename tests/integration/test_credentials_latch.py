"""The credentials latch on the real stack: a refused login is one call to Tebra, not one per task.

Its own Redis, API and prefork worker (the session's worker has good credentials and would take the syncs),
the session's simulator over HTTP. The worker reads its credentials from TEBRA_CREDENTIALS_FILE, first with
a wrong password; the operator then fixes the file and resumes, with no restart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from config import load_settings
from tasks import keys
from tests.integration.tebra_flow import clinic_weekday, request_sync, sync_status
from tests.integration.test_ops_stack import wait_for
from tests.support.own_stack import own_stack

GOOD_PASSWORD = load_settings({"APP_ENV": "test"}).tebra_password
WRONG_PASSWORD = "not-the-password-0451"


def credentials_file(path: Path, password: str) -> None:
    settings = load_settings({"APP_ENV": "test"})
    path.write_text(
        f"TEBRA_USER={settings.tebra_user}\nTEBRA_PASSWORD={password}\n"
        f"TEBRA_CUSTOMER_KEY={settings.tebra_customer_key}\n",
        encoding="utf-8",
    )


@pytest.fixture
def latch_stack(
    stack_env: dict[str, str], tmp_path: Path, logs_dir: Path
) -> Iterator[tuple[str, redis.Redis, Path]]:
    """(API base URL, a client on the stack's data Redis, the credentials file: a wrong password at first)."""
    secrets = tmp_path / "tebra-credentials.env"
    credentials_file(secrets, WRONG_PASSWORD)
    with own_stack(stack_env, tmp_path, logs_dir, "latch", TEBRA_CREDENTIALS_FILE=str(secrets)) as stack:
        yield stack.base_url, stack.redis, secrets


def three_weekdays() -> list[str]:
    """Three distinct clinic weekdays in the past fortnight (the simulator books weekdays)."""
    found: list[str] = []
    offset = -9
    while len(found) < 3:
        day = clinic_weekday(offset)
        if day not in found:
            found.append(day)
        offset -= 1
    return found


def events_of(client: redis.Redis, action: str) -> list[dict[str, Any]]:
    return [json.loads(f["payload"]) for _, f in client.xrange(keys.AGENT_UPDATES) if f["action"] == action]


@pytest.mark.slow(seconds=21)
def test_a_refused_login_is_one_call_then_resume_after_the_fix_loses_nothing(
    latch_stack: tuple[str, redis.Redis, Path], sim: Any, auth_headers: dict[str, str]
) -> None:
    base, client, secrets = latch_stack
    dates = three_weekdays()
    for date in dates:
        request_sync(base, date, auth_headers)

    def all_deferred_twice() -> bool:
        statuses = [sync_status(base, date, auth_headers) or {} for date in dates]
        return all(
            s.get("state") == "deferred"
            and s.get("error") == "TEBRA_CREDENTIALS_REFUSED"
            and int(s.get("deferrals") or 0) >= 2
            for s in statuses
        )

    # Every sync comes back at least twice (10 s apart) while latched: none of those reaches Tebra.
    wait_for(all_deferred_twice, 60, "every sync deferred twice by the latch")
    # (The simulator is the session's: its worker's leftover patient lookups, with good credentials, may
    # show up in the counts; only this stack's calls are refused.)
    stats = sim.stats()
    assert sum(stats["security_failures"].values()) == 1, stats
    assert stats["calls"]["GetAppointments"] == 1, stats["calls"]

    refused = events_of(client, "tebra_credentials_refused")
    assert len(refused) == 1
    assert "Invalid user name and/or password" in refused[0]["message"]
    assert WRONG_PASSWORD not in json.dumps(refused)
    state = requests.get(f"{base}/api/v1/ops/tebra", headers=auth_headers, timeout=5).json()["data"]
    assert state["credentials"]["refused"] is True
    assert state["credentials"]["operation"] == "GetAppointments"
    status = requests.get(f"{base}/api/v1/schedule/status/{dates[0]}", headers=auth_headers, timeout=5).json()
    assert (
        "Invalid user name and/or password" in status["data"]["error_message"]
    )  # Tebra's words, in the status
    ready = requests.get(f"{base}/ready", timeout=5).json()
    assert ready["tebra"]["credentials"] == "refused"
    assert not any(client.exists(keys.appointments(date)) for date in dates)

    # The operator fixes the file, then resumes: the worker reads it again, without a restart.
    credentials_file(secrets, GOOD_PASSWORD)
    resumed = requests.post(
        f"{base}/api/v1/ops/tebra", json={"action": "resume"}, headers=auth_headers, timeout=5
    )
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["data"]["changed"] is True
    assert resumed.json()["data"]["credentials"]["refused"] is False

    def all_succeeded() -> bool:
        return all(
            (sync_status(base, date, auth_headers) or {}).get("state") == "succeeded" for date in dates
        )

    wait_for(all_succeeded, 60, "every sync to succeed after the resume")
    for date in dates:
        assert client.hlen(keys.appointments(date)) == len(sim.appointments(date))
    assert len(events_of(client, "tebra_credentials_refused")) == 1
    assert sum(sim.stats()["security_failures"].values()) == 1
    assert requests.get(f"{base}/ready", timeout=5).json()["tebra"]["credentials"] == "ok"


def test_resume_without_a_refusal_changes_nothing_but_the_generation(
    latch_stack: tuple[str, redis.Redis, Path], auth_headers: dict[str, str]
) -> None:
    base, _, _ = latch_stack
    answer = requests.post(
        f"{base}/api/v1/ops/tebra", json={"action": "resume"}, headers=auth_headers, timeout=5
    )
    assert answer.status_code == 200
    assert answer.json()["data"]["changed"] is False
    bad = requests.post(
        f"{base}/api/v1/ops/tebra", json={"action": "unlock"}, headers=auth_headers, timeout=5
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "VALIDATION_ERROR"
