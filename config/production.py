"""What production refuses: published or weak secrets, the simulator, plain-text links, development sign-in.

:func:`production_problems` lists every refusal at once, each naming its setting (docs/security.md);
config/settings.py raises them together when ``APP_ENV=production``. The development secrets are spelled here,
the one place that knows them as published (the settings use them as defaults).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from config.parsing import SIGN_IN_MODES, is_loopback

if TYPE_CHECKING:
    from config.settings import Settings

DEV_PHI_HMAC_KEY = "dev-only-phi-hmac-key-change-me"
DEV_PHI_ENCRYPTION_KEY = "ZGV2LW9ubHktcGhpLWVuY3J5cHRpb24ta2V5LTMyYiE="  # base64 of 32 bytes, dev only
DEV_AUDIT_SIGNING_KEY = "dev-only-audit-signing-key-change-me"
DEV_AUDIT_RECORD_KEY = "dev-only-audit-record-key-change-me"
# A secret shorter than this many bytes (after base64 decoding, when it is base64) is refused in production.
MIN_SECRET_BYTES = 32
# 32 random bytes show ~30 distinct values (43 base64 characters ~28); a key with fewer than this is a
# pattern ("aaaa…", "0000…", a repeated word), not randomness.
MIN_DISTINCT_SECRET_BYTES = 12
SIMULATOR_HOSTS = ("tebra-sim",)  # compose's name of the simulator service


def secret_bytes(value: str) -> bytes:
    """The key material of a secret setting: its base64 decoding when it is canonical base64 of at least
    MIN_SECRET_BYTES, else its UTF-8 bytes (a long random string is fine as it is)."""
    text = value.strip()
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text.encode()
    if len(decoded) >= MIN_SECRET_BYTES and base64.b64encode(decoded).decode() == text:
        return decoded
    return text.encode()


def weak_secret(material: bytes) -> str | None:
    """Why ``material`` is no key (too short, all zero, a pattern), or None when it may be one."""
    if len(material) < MIN_SECRET_BYTES:
        return f"shorter than {MIN_SECRET_BYTES} bytes"
    if not material.strip(b"\x00") or not material.strip(b"0"):
        return "all zero"
    if len(set(material)) < MIN_DISTINCT_SECRET_BYTES:
        return "not random (too few distinct bytes)"
    return None


def _key_problems(settings: Settings) -> list[str]:
    """Refusals of PHI_HMAC_KEY, AUDIT_SIGNING_KEY, AUDIT_RECORD_KEY and every PHI_ENCRYPTION_KEYS key (an
    empty one is a key this process is not given: compose hands each service only its own secrets)."""
    problems: list[str] = []
    held = {
        "PHI_HMAC_KEY": settings.phi_hmac_key,
        "AUDIT_SIGNING_KEY": settings.audit_signing_key,
        "AUDIT_RECORD_KEY": settings.audit_record_key,
    }
    materials = {name: secret_bytes(value) for name, value in held.items() if value}
    published = {secret_bytes(key) for key in (DEV_PHI_HMAC_KEY, DEV_AUDIT_SIGNING_KEY, DEV_AUDIT_RECORD_KEY)}
    published.add(base64.b64decode(DEV_PHI_ENCRYPTION_KEY))
    for item in filter(None, settings.phi_encryption_keys.split(",")):
        key_id, _, encoded = item.strip().partition(":")
        name = f"PHI_ENCRYPTION_KEYS[{key_id or '?'}]"
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"{name}: not base64")
            continue
        if len(decoded) != 32:
            problems.append(f"{name}: an AES-256 key is exactly 32 bytes, not {len(decoded)}")
            continue
        materials[name] = decoded
    seen: dict[bytes, str] = {}
    for name, material in materials.items():
        if material in published:
            problems.append(f"{name}: the published development key (anyone can compute with it)")
        elif why := weak_secret(material):
            problems.append(f"{name}: {why}; use at least {MIN_SECRET_BYTES} random bytes")
        if material in seen:
            problems.append(f"{name}: the same key as {seen[material]}; every key must be distinct")
        seen.setdefault(material, name)
    return problems


def _url_problems(settings: Settings) -> list[str]:
    problems: list[str] = []
    tebra = {"TEBRA_WSDL_URL": settings.tebra_wsdl_url, "TEBRA_ENDPOINT_URL": settings.tebra_endpoint_url}
    for name, url in tebra.items():
        if not url and name == "TEBRA_ENDPOINT_URL":
            continue  # empty: the WSDL's own soap:address
        parts = urlsplit(url)
        if parts.scheme != "https":
            problems.append(f"{name}: must be https:// (credentials and patient data cross it)")
        host = parts.hostname or ""
        if is_loopback(host) or host in SIMULATOR_HOSTS or parts.port == settings.sim_port or "/_sim" in url:
            problems.append(f"{name}: points at the simulator or this machine, not Tebra")
    redis_urls = {
        "REDIS_URL": settings.redis_url,
        "CELERY_BROKER_URL": settings.celery_broker_url,
        "CELERY_RESULT_BACKEND": settings.celery_result_backend,
    }
    for name, url in redis_urls.items():
        if not url:
            continue  # empty: REDIS_URL, checked above
        parts = urlsplit(url)
        if parts.scheme != "rediss" and not parts.password:
            problems.append(f"{name}: needs a password (redis://:pw@…) or TLS (rediss://)")
    return problems


def production_problems(settings: Settings) -> list[str]:
    """Every reason production refuses these settings, each naming its setting (empty: none).

    A secret set to the empty string is one this process does not hold (compose gives each service only the
    secrets it uses, docs/operations.md): it is not refused here, and whatever would use it fails there. An
    unset secret is the published development value, and that is refused.
    """
    problems = _key_problems(settings) + _url_problems(settings) + settings.sign_in_problems()
    defaults = type(settings)()  # the development values
    refused = {
        "AUTH_MODE": (
            settings.auth_mode not in SIGN_IN_MODES,
            "must be oidc or auth0 (dev trusts a key on local disk)",
        ),
        "OIDC_AUDIENCE": (
            settings.audience in ("", defaults.auth0_audience),
            "is empty or the development audience (AUTH0_AUDIENCE when OIDC_AUDIENCE is empty)",
        ),
        "TRUSTED_HOSTS": (not settings.trusted_hosts.strip(), "is empty: list the host names clients use"),
        "LOG_LEVEL": (settings.log_level.upper() == "DEBUG", "DEBUG logs request details; use INFO"),
        "TEBRA_USER": (settings.tebra_user == defaults.tebra_user, "is the simulator's development user"),
        "TEBRA_PASSWORD": (
            settings.tebra_password == defaults.tebra_password,
            "is the simulator's development password",
        ),
        "TEBRA_CUSTOMER_KEY": (
            settings.tebra_customer_key == defaults.tebra_customer_key,
            "is the simulator's development customer key",
        ),
        "FLOWER_USER": (settings.flower_user == defaults.flower_user, "is the default"),
        "FLOWER_PASSWORD": (
            settings.flower_password == defaults.flower_password or 0 < len(settings.flower_password) < 16,
            "is the default or shorter than 16 characters",
        ),
    }
    problems += [f"{name}: {why}" for name, (bad, why) in refused.items() if bad]
    return sorted(problems)
