"""The credentials file and the latch's scripts (a real Redis: the scratch database)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from config import load_settings
from tasks import credentials_latch
from tasks.tebra.credentials import CredentialsError, with_credentials


def test_the_file_wins_over_the_settings_and_a_missing_key_keeps_its_setting(tmp_path: Path) -> None:
    secrets = tmp_path / "tebra.env"
    secrets.write_text(
        "# rotated\nTEBRA_PASSWORD = 'n3w-pass'\n\nTEBRA_USER=ops@example.test\n", encoding="utf-8"
    )
    settings = with_credentials(load_settings({"APP_ENV": "test"}, tebra_credentials_file=str(secrets)))
    assert settings.tebra_password == "n3w-pass"
    assert settings.tebra_user == "ops@example.test"
    assert settings.tebra_customer_key == load_settings({"APP_ENV": "test"}).tebra_customer_key


def test_no_file_leaves_the_settings_alone() -> None:
    settings = load_settings({"APP_ENV": "test"})
    assert with_credentials(settings) is settings


@pytest.mark.parametrize(
    ("text", "problem"),
    [("TEBRA_PASSWORD hunter2\n", "line 1"), ("TEBRA_USER=a\nPASSWORD=hunter2\n", "line 2")],
)
def test_a_bad_line_is_refused_without_quoting_it(tmp_path: Path, text: str, problem: str) -> None:
    secrets = tmp_path / "tebra.env"
    secrets.write_text(text, encoding="utf-8")
    with pytest.raises(CredentialsError) as raised:
        with_credentials(load_settings({"APP_ENV": "test"}, tebra_credentials_file=str(secrets)))
    assert problem in str(raised.value) and "hunter2" not in str(raised.value)


def test_an_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="unreadable"):
        with_credentials(
            load_settings({"APP_ENV": "test"}, tebra_credentials_file=str(tmp_path / "absent.env"))
        )


def test_the_first_refusal_latches_once_and_resume_opens_one_trial(r: redis.Redis) -> None:
    assert credentials_latch.admit(r, "a", 5000) == ("trial", "", 0)
    assert credentials_latch.admit(r, "b", 5000)[0] == "wait"  # one call at a time tries unproven credentials
    assert credentials_latch.trip(
        r, refused_at="2026-12-01T10:00:00.000Z", operation="GetAppointments", message="x"
    )
    assert not credentials_latch.trip(
        r, refused_at="2026-12-01T10:00:01.000Z", operation="GetPatient", message="y"
    )
    credentials_latch.settle(r, "a", 0, accepted=False)
    assert credentials_latch.admit(r, "c", 5000) == ("refused", "2026-12-01T10:00:00.000Z", 0)
    state = credentials_latch.read(r)
    assert state.refused and state.operation == "GetAppointments"

    assert credentials_latch.resume(r, resumed_at="2026-12-01T10:05:00.000Z", by="api:ops") == (True, 1)
    assert credentials_latch.admit(r, "d", 5000) == ("trial", "", 1)
    credentials_latch.settle(r, "d", 1, accepted=True)
    assert credentials_latch.admit(r, "e", 5000) == ("ok", "", 1)  # proven: no lease any more
    assert credentials_latch.resume(r, resumed_at="2026-12-01T10:06:00.000Z", by="api:ops") == (False, 2)
