"""Settings come from the environment in one place, with defaults that run locally."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from config import SettingsError, load_settings, setting_names

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "APP_ENV": "production",
    "PHI_HMAC_KEY": "prod-hmac",
    "PHI_ENCRYPTION_KEYS": "k9:cHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHA=",
    "AUDIT_SIGNING_KEY": "prod-audit",
    "TEBRA_PASSWORD": "prod-tebra",
    "FLOWER_PASSWORD": "prod-flower",
    "AUTH0_AUDIENCE": "https://api.clinic.example/",
    "METRICS_TOKEN": "prod-metrics",
}


def test_defaults_run_locally() -> None:
    settings = load_settings({"APP_ENV": "test"})
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.broker_url == settings.redis_url
    assert settings.tebra_wsdl_url.startswith("http://127.0.0.1:8089/")
    assert settings.clinic_tz == "America/Chicago"


def test_environment_values_are_converted() -> None:
    settings = load_settings(
        {
            "APP_ENV": "test",
            "API_PORT": "9000",
            "TEBRA_THROTTLE_ENABLED": "off",
            "TEBRA_THROTTLE_MARGIN": "0.2",
        }
    )
    assert settings.api_port == 9000
    assert settings.tebra_throttle_enabled is False
    assert settings.tebra_throttle_margin == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"API_PORT": "eighty"}, "API_PORT"),
        ({"TEBRA_THROTTLE_ENABLED": "maybe"}, "TEBRA_THROTTLE_ENABLED"),
        ({"APP_ENV": "staging"}, "APP_ENV"),
        ({"TASK_SOFT_TIME_LIMIT_S": "200"}, "TASK_SOFT_TIME_LIMIT_S"),
        ({"BROKER_VISIBILITY_TIMEOUT_S": "100"}, "BROKER_VISIBILITY_TIMEOUT_S"),
        ({"PHI_OPEN_MEMORY_S": "-1"}, "PHI_OPEN_MEMORY_S"),
        ({"SYNC_COALESCE_DAYS": "0"}, "SYNC_COALESCE_DAYS"),
        ({"SYNC_COALESCE_DAYS": "32"}, "SYNC_COALESCE_DAYS"),
        ({"SYNC_SWEEP_INTERVAL_S": "1"}, "SYNC_SWEEP_INTERVAL_S"),
        ({"SYNC_SWEEP_INTERVAL_S": "201"}, "SYNC_SWEEP_INTERVAL_S"),
        ({"PHI_OPEN_MEMORY_S": "86400"}, "PHI_OPEN_MEMORY_S"),
        ({"AUTH_MODE": "saml"}, "AUTH_MODE"),
        ({"AUTH_MODE": "oidc"}, "OIDC_ISSUER"),
        ({"AUTH_MODE": "oidc", "OIDC_ISSUER": "http://idp.example/"}, "https"),
        ({"OIDC_ROLE_SCOPES": "front-desk"}, "OIDC_ROLE_SCOPES"),
        ({"OIDC_ROLE_SCOPES": "ops="}, "OIDC_ROLE_SCOPES"),
    ],
)
def test_bad_values_are_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings({"APP_ENV": "test", **env})


def test_production_refuses_development_secrets() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"APP_ENV": "production"})
    for name in (
        "PHI_HMAC_KEY",
        "PHI_ENCRYPTION_KEYS",
        "AUDIT_SIGNING_KEY",
        "AUTH_MODE",
        "TEBRA_PASSWORD",
    ):
        assert name in str(info.value)


def test_env_example_lists_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE)
    assert sorted(listed) == sorted(setting_names())


def test_sign_in_settings_derive_issuer_audience_and_roles() -> None:
    auth0 = load_settings({"APP_ENV": "test", "AUTH_MODE": "auth0", "AUTH0_DOMAIN": "clinic.us.auth0.com"})
    assert (
        auth0.issuer == "https://clinic.us.auth0.com/" and auth0.audience == "https://clinic-relay.local/api"
    )
    oidc = load_settings(
        {
            "APP_ENV": "test",
            "AUTH_MODE": "oidc",
            "OIDC_ISSUER": "http://127.0.0.1:9000",
            "OIDC_AUDIENCE": "https://api.example/",
        }
    )
    assert oidc.issuer == "http://127.0.0.1:9000" and oidc.audience == "https://api.example/"
    assert load_settings({"APP_ENV": "test"}).role_scopes == {
        "front-desk": ("read:schedule", "sync:schedule", "write:patients"),
        "clinician": ("read:schedule", "write:patients"),
        "ops": ("read:schedule", "ops:breaker"),
    }
    with pytest.raises(SettingsError, match="OIDC_CLIENT_ID"):
        load_settings({**PRODUCTION, "AUTH_MODE": "oidc", "OIDC_ISSUER": "https://idp.example/"})
