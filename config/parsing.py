"""Reading settings' values: the values APP_ENV and AUTH_MODE may take, an environment string as the field's
type, the role table, host names.

Pure functions over strings (no I/O); config/settings.py and config/production.py build on them, and the
web process asks :func:`is_loopback` what a bind address or a Host header reaches.
"""

from __future__ import annotations

import ipaddress
from typing import Any

APP_ENVS = ("development", "test", "production")
SIGN_IN_MODES = ("oidc", "auth0")  # AUTH_MODE values that sign people in with an identity provider
# Host names that reach the machine itself: development binds nothing else, production's Tebra is never one.
LOOPBACK_NAMES = ("localhost", "ip6-localhost")


class SettingsError(ValueError):
    """A setting has a value the system cannot run with."""


def parse_role_scopes(table: str) -> dict[str, tuple[str, ...]]:
    """``"front-desk=read:schedule sync:schedule;ops=ops:breaker"`` -> {role: scopes}, or SettingsError."""
    roles: dict[str, tuple[str, ...]] = {}
    for entry in filter(None, (part.strip() for part in table.split(";"))):
        role, sep, scopes = entry.partition("=")
        if not sep or not role.strip() or not scopes.split():
            raise SettingsError(f"OIDC_ROLE_SCOPES: expected role=scope scope…, got {entry!r}")
        roles[role.strip()] = tuple(scopes.split())
    return roles


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name, IPv4 or IPv6 address, possibly in brackets) reaches this machine only."""
    bare = host.strip().strip("[]").lower()
    if bare in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def convert(raw: str, default: Any) -> Any:
    """``raw`` (an environment string) as the type of the field's ``default``; ValueError when it is not."""
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off", ""}:
            return False
        raise SettingsError(f"not a boolean: {raw!r}")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw
