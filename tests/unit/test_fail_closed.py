"""Fail closed: nothing left unset opens the door, and production refuses weak or published secrets.

Each test is an attack that used to work on a fresh clone: a process started with an empty environment
came up in development mode (an open token route, published keys); production accepted ``PHI_HMAC_KEY=x``.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import SettingsError, load_settings
from config.production import DEV_AUDIT_SIGNING_KEY, DEV_PHI_ENCRYPTION_KEY, DEV_PHI_HMAC_KEY
from tests.support.processes import BIN, ROOT

# A production environment that passes: every key random, distinct and long, Redis with a password.
STRONG = {
    "APP_ENV": "production",
    "PHI_HMAC_KEY": base64.b64encode(bytes(range(1, 33))).decode(),
    "PHI_ENCRYPTION_KEYS": "k9:" + base64.b64encode(bytes(range(40, 72))).decode(),
    "AUDIT_SIGNING_KEY": base64.b64encode(bytes(range(100, 132))).decode(),
    "AUDIT_RECORD_KEY": base64.b64encode(bytes(range(140, 172))).decode(),
    "AUTH_MODE": "auth0",
    "AUTH0_DOMAIN": "tenant.example",
    "AUTH0_AUDIENCE": "https://api.clinic.example/",
    "OIDC_CLIENT_ID": "relay-board",
    "METRICS_TOKEN": "prod-metrics-token",
    "TRUSTED_HOSTS": "relay.clinic.example",
    "TEBRA_WSDL_URL": "https://webservice.kareo.com/services/soap/2.1/KareoServices.svc?wsdl",
    "TEBRA_USER": "clinic@practice.example",
    "TEBRA_PASSWORD": "a-real-tebra-password",
    "TEBRA_CUSTOMER_KEY": "a-real-customer-key",
    "FLOWER_USER": "clinic-ops",
    "FLOWER_PASSWORD": "a-long-flower-password",
    "REDIS_URL": "redis://:redis-password@redis:6379/0",
}


def refusal(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    return str(info.value)


def test_a_strong_production_environment_starts() -> None:
    assert load_settings(STRONG).is_production


def test_no_app_env_is_refused_by_name() -> None:
    assert "APP_ENV is not set" in refusal({})
    assert "APP_ENV is not set" in refusal({"AUTH_MODE": "dev"})


@pytest.mark.parametrize(
    "command",
    [
        [str(BIN / "gunicorn"), "-c", "app/gunicorn_conf.py", "--bind", "127.0.0.1:0", "app.wsgi:app"],
        [str(BIN / "celery"), "-A", "workers.celery_app", "beat"],
        [str(BIN / "celery"), "-A", "workers.celery_app", "worker", "--pool=solo"],
        [sys.executable, "-m", "workers.audit", "run"],
    ],
    ids=["api", "beat", "worker", "audit"],
)
def test_a_process_started_without_app_env_exits_at_once_naming_it(command: list[str]) -> None:
    env = {name: value for name, value in os.environ.items() if name != "APP_ENV"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "APP_ENV is not set" in done.stdout + done.stderr


def test_development_binds_loopback_only() -> None:
    everywhere = "0.0.0.0"  # noqa: S104 - the exposure under test
    message = refusal({"APP_ENV": "development", "API_HOST": everywhere, "FLOWER_ADDRESS": "10.0.0.5"})
    assert "API_HOST" in message and "FLOWER_ADDRESS" in message
    assert load_settings({"APP_ENV": "development", "API_HOST": "::1"}).api_host == "::1"
    # Tests may run the local signing key; production never.
    assert load_settings({"APP_ENV": "test", "AUTH_MODE": "dev"}).auth_mode == "dev"


def test_development_refuses_a_command_line_bind_beyond_loopback() -> None:
    env = {**os.environ, "APP_ENV": "development"}
    command = [str(BIN / "gunicorn"), "-c", "app/gunicorn_conf.py", "--bind", "0.0.0.0:0", "app.wsgi:app"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "binds loopback only" in done.stdout + done.stderr


def test_the_dev_token_route_exists_only_in_development(tmp_path: Path) -> None:
    from app import create_app

    common = {
        "AUTH_MODE": "dev",
        "DEV_KEY_PATH": str(tmp_path / "key.pem"),
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    test_app = create_app(load_settings({**common, "APP_ENV": "test"}))
    assert test_app.test_client().get("/dev/token").status_code == 404
    dev_app = create_app(load_settings({**common, "APP_ENV": "development"}))
    assert dev_app.test_client().get("/dev/token").status_code == 200
    assert "dev/token" not in refusal({**STRONG, "AUTH_MODE": "dev"})
    assert "AUTH_MODE" in refusal({**STRONG, "AUTH_MODE": "dev"})


WEAK = [
    ({"PHI_HMAC_KEY": "x"}, "PHI_HMAC_KEY: shorter than 32 bytes"),
    ({"PHI_HMAC_KEY": "a" * 64}, "PHI_HMAC_KEY: not random"),
    ({"PHI_HMAC_KEY": DEV_PHI_HMAC_KEY}, "PHI_HMAC_KEY: the published development key"),
    ({"AUDIT_SIGNING_KEY": DEV_AUDIT_SIGNING_KEY}, "AUDIT_SIGNING_KEY: the published development key"),
    ({"AUDIT_SIGNING_KEY": STRONG["PHI_HMAC_KEY"]}, "AUDIT_SIGNING_KEY: the same key as PHI_HMAC_KEY"),
    (
        {"AUDIT_RECORD_KEY": STRONG["AUDIT_SIGNING_KEY"]},
        "AUDIT_RECORD_KEY: the same key as AUDIT_SIGNING_KEY",
    ),
    (
        {"PHI_ENCRYPTION_KEYS": "k0:" + base64.b64encode(bytes(32)).decode()},
        "PHI_ENCRYPTION_KEYS[k0]: all zero",
    ),
    ({"PHI_ENCRYPTION_KEYS": f"k1:{DEV_PHI_ENCRYPTION_KEY}"}, "PHI_ENCRYPTION_KEYS[k1]: the published"),
    ({"TEBRA_WSDL_URL": "http://webservice.kareo.com/x?wsdl"}, "TEBRA_WSDL_URL: must be https://"),
    (
        {"TEBRA_WSDL_URL": "https://tebra-sim:8089/KareoServices.svc?wsdl"},
        "TEBRA_WSDL_URL: points at the simulator",
    ),
    ({"TEBRA_ENDPOINT_URL": "http://127.0.0.1:8089/x"}, "TEBRA_ENDPOINT_URL: must be https://"),
    ({"REDIS_URL": "redis://redis:6379/0"}, "REDIS_URL: needs a password"),
    ({"CELERY_BROKER_URL": "redis://redis:6379/1"}, "CELERY_BROKER_URL: needs a password"),
    ({"LOG_LEVEL": "DEBUG"}, "LOG_LEVEL: DEBUG"),
    ({"FLOWER_USER": "ops"}, "FLOWER_USER"),
    ({"FLOWER_PASSWORD": "ops-dev-password"}, "FLOWER_PASSWORD"),
    ({"TEBRA_USER": "relay-dev@example.test"}, "TEBRA_USER"),
    ({"TEBRA_CUSTOMER_KEY": "relay-dev-customer-key"}, "TEBRA_CUSTOMER_KEY"),
]


@pytest.mark.parametrize(("change", "expected"), WEAK, ids=[expected.split(":")[0] for _, expected in WEAK])
def test_production_refuses_each_weak_value_naming_it_and_why(change: dict[str, str], expected: str) -> None:
    assert expected in refusal({**STRONG, **change})


def test_redis_over_tls_needs_no_password() -> None:
    assert load_settings({**STRONG, "REDIS_URL": "rediss://redis.example:6380/0"})


def test_every_refusal_is_reported_at_once() -> None:
    message = refusal({"APP_ENV": "production"})
    for name in (
        "PHI_HMAC_KEY",
        "PHI_ENCRYPTION_KEYS[k1]",
        "AUDIT_SIGNING_KEY",
        "AUTH_MODE",
        "OIDC_AUDIENCE",
        "TRUSTED_HOSTS",
        "TEBRA_WSDL_URL",
        "TEBRA_USER",
        "TEBRA_PASSWORD",
        "TEBRA_CUSTOMER_KEY",
        "FLOWER_USER",
        "FLOWER_PASSWORD",
        "REDIS_URL",
    ):
        assert f"{name}:" in message, name
    assert message.startswith("production refuses ")


def test_an_empty_secret_is_one_this_process_does_not_hold() -> None:
    """compose gives each service only its own secrets: beat holds none, the audit writer only its key."""
    beat = {
        **STRONG,
        "PHI_HMAC_KEY": "",
        "PHI_ENCRYPTION_KEYS": "",
        "AUDIT_SIGNING_KEY": "",
        "AUDIT_RECORD_KEY": "",
    }
    beat.update(
        TEBRA_PASSWORD="", TEBRA_CUSTOMER_KEY="", FLOWER_USER="", FLOWER_PASSWORD="", METRICS_TOKEN=""
    )
    assert load_settings(beat).is_production
    unset = {name: value for name, value in STRONG.items() if name != "PHI_HMAC_KEY"}  # unset: the dev value
    assert "PHI_HMAC_KEY: the published development key" in refusal(unset)
