"""Every setting of Clinic Relay, read from the environment in this one place.

Settings are data: a frozen dataclass built by :func:`load_settings` from a mapping (``os.environ`` by
default). Nothing here opens a connection or a file. Each default runs the whole stack locally (`make run`):
Redis on 127.0.0.1:6379, the Tebra simulator on 127.0.0.1:8089 with its development credentials.
``.env.example`` lists every variable with its default and meaning; a test keeps the two in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

DEV_PHI_HMAC_KEY = "dev-only-phi-hmac-key-change-me"
DEV_PHI_ENCRYPTION_KEY = "ZGV2LW9ubHktcGhpLWVuY3J5cHRpb24ta2V5LTMyYiE="  # base64 of 32 bytes, dev only
DEV_AUDIT_SIGNING_KEY = "dev-only-audit-signing-key-change-me"


SIGN_IN_MODES = ("oidc", "auth0")  # AUTH_MODE values that sign people in with an identity provider


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


@dataclass(frozen=True)
class Settings:
    """The whole configuration. Field names are the environment variables, lower-cased."""

    app_env: str = "development"  # development | test | production
    log_level: str = "INFO"

    # Redis: one server carries the broker, the result backend, the data and the events.
    redis_url: str = "redis://127.0.0.1:6379/0"
    celery_broker_url: str = ""  # empty: same as REDIS_URL
    celery_result_backend: str = ""  # empty: same as REDIS_URL
    redis_socket_timeout_s: float = 5.0
    redis_connect_timeout_s: float = 2.0

    # Tebra (the default is the local simulator and its development account).
    tebra_wsdl_url: str = "http://127.0.0.1:8089/KareoServices.svc?wsdl"
    tebra_endpoint_url: str = ""  # empty: the soap:address of the WSDL
    tebra_user: str = "relay-dev@example.test"
    tebra_password: str = "relay-dev-password"  # noqa: S105 - the simulator's; refused in production
    tebra_customer_key: str = "relay-dev-customer-key"
    tebra_practice_name: str = "Lakeside Family Clinic"
    tebra_connect_timeout_s: float = 10.0  # WSDL fetch and TCP connect
    tebra_operation_timeout_s: float = 30.0  # one SOAP call, end to end (zeep leaves it unset by default)
    # Pace each operation this much slower than Tebra's published interval: a gap of exactly the limit
    # still gets throttled in the wild (SPEC.md §7).
    tebra_throttle_margin: float = 0.08
    tebra_throttle_enabled: bool = True
    tebra_wsdl_cache_s: int = 86400

    clinic_tz: str = "America/Chicago"

    # Web process.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    cors_origins: str = ""  # comma-separated allow-list; empty: same origin only
    trusted_proxies: int = 0  # how many X-Forwarded-For hops to trust
    max_range_days: int = 31
    ws_ping_interval_s: float = 25.0
    ws_send_buffer_bytes: int = 262144  # a socket whose kernel buffer is this full is dropped as slow

    # Worker.
    worker_concurrency: int = 4
    task_soft_time_limit_s: int = 120
    task_time_limit_s: int = 150
    task_max_retries: int = 8
    retry_backoff_max_s: int = 300
    # Must exceed the longest a task is held unacked: time limit + retry backoff (tasks/celery_factory.py).
    # It is also how long a message waits after its worker died hard (SIGKILL, OOM) before redelivery.
    broker_visibility_timeout_s: int = 900
    sync_lock_ttl_s: int = 600  # dedup lock for a queued/running sync of one date
    # A full sync also takes the queued full syncs of the days that follow it, up to this many days in all,
    # into its one GetAppointments (docs/tebra.md, "Coalesced syncs"); 1 turns it off.
    sync_coalesce_days: int = 7
    periodic_sync_minutes: int = 0  # 0: no periodic sync of today
    patient_details_enabled: bool = True

    # Tebra breaker (cb:tebra, docs/breaker.md): one state in Redis shared by every worker process.
    breaker_failure_threshold: int = 3  # upstream failures within the window that open it
    breaker_window_s: float = 60.0  # sliding window the failures are counted in
    breaker_open_s: float = 60.0  # how long it stays open before one trial call is let through
    breaker_latency_p95_s: float = 3.0  # p95 call latency above this half-opens it (1 call in N goes through)
    breaker_latency_window_s: float = 120.0  # the latencies the p95 is taken over
    breaker_sample_every: int = 10  # while half-open for latency, admit 1 call in this many
    # Fewer calls than this in the latency window are not judged: with 3 calls the "p95" is just the slowest.
    breaker_latency_min_samples: int = 5
    breaker_half_retry_s: float = 5.0  # a task refused while half-open (trial taken, not sampled) retries

    # Data.
    retention_days: int = 14
    providers_cache_ttl_s: int = 3600
    stream_maxlen: int = 10000  # agent_updates, task_results, audit (approximate, trimmed by whole nodes)

    # Security.
    phi_hmac_key: str = DEV_PHI_HMAC_KEY
    phi_encryption_keys: str = f"k1:{DEV_PHI_ENCRYPTION_KEY}"  # "id:base64key,…"; the first encrypts
    # The API remembers values it opened for at most this long (0: never), docs/security.md.
    phi_open_memory_s: float = 60.0
    audit_signing_key: str = DEV_AUDIT_SIGNING_KEY
    audit_log_path: str = "var/audit/audit.jsonl"
    # Sign-in (docs/security.md, "Sign-in with the clinic's identity provider"). AUTH_MODE: dev (a local
    # signing key, `make token`), oidc (any OpenID provider: OIDC_ISSUER's discovery document names the
    # rest), auth0 (oidc with the issuer https://AUTH0_DOMAIN/).
    auth_mode: str = "dev"
    auth0_domain: str = ""
    auth0_audience: str = "https://clinic-relay.local/api"
    oidc_issuer: str = ""  # exactly as the provider writes `issuer` (Auth0: with the trailing slash)
    oidc_audience: str = ""  # the API's identifier in access tokens; empty: AUTH0_AUDIENCE
    oidc_client_id: str = ""  # the board's public client (Authorization Code + PKCE, no secret)
    oidc_scopes: str = "openid profile email offline_access"  # offline_access: refresh-token renewal
    # The request parameters that name OIDC_AUDIENCE at sign-in: Auth0 reads `audience`, RFC 8707 providers
    # `resource`; each ignores the other. Empty for providers that take the API in OIDC_SCOPES (Entra ID).
    oidc_audience_params: str = "audience resource"
    oidc_discovery_ttl_s: float = 3600.0  # the discovery document is refreshed in the background after this
    # Roles: the access-token claim naming the user's roles (a list or one string; "a.b" also looks inside
    # nested objects, Keycloak's realm_access.roles) and what each role may do: "role=scope scope;…".
    oidc_role_claim: str = "roles"
    oidc_role_scopes: str = (
        "front-desk=read:schedule sync:schedule write:patients;"
        "clinician=read:schedule write:patients;"
        "ops=read:schedule ops:breaker"
    )
    dev_key_path: str = "var/dev-signing-key.pem"
    rate_limit_capacity: int = 60
    rate_limit_refill_per_s: float = 10.0

    # Ops.
    flower_address: str = "127.0.0.1"
    flower_port: int = 5555
    flower_user: str = "ops"
    flower_password: str = "ops-dev-password"  # noqa: S105 - development only; refused in production
    metrics_token: str = ""  # empty: /metrics answers loopback clients only
    worker_metrics_address: str = "127.0.0.1"  # the worker's /metrics has no auth: keep it on loopback
    worker_metrics_port: int = 9808

    # Simulator (development and tests only).
    sim_host: str = "127.0.0.1"
    sim_port: int = 8089

    @property
    def broker_url(self) -> str:
        return self.celery_broker_url or self.redis_url

    @property
    def result_backend(self) -> str:
        return self.celery_result_backend or self.redis_url

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    # Sign-in, derived.

    @property
    def issuer(self) -> str:
        """The identity provider's issuer (oidc, auth0 modes); empty in dev mode."""
        if self.auth_mode == "auth0" and not self.oidc_issuer:
            domain = self.auth0_domain.strip().removeprefix("https://").rstrip("/")
            return f"https://{domain}/" if domain else ""
        return self.oidc_issuer.strip() if self.auth_mode in SIGN_IN_MODES else ""

    @property
    def audience(self) -> str:
        """The API's audience: OIDC_AUDIENCE, or AUTH0_AUDIENCE when that is empty."""
        return self.oidc_audience.strip() or self.auth0_audience

    @property
    def role_scopes(self) -> dict[str, tuple[str, ...]]:
        """OIDC_ROLE_SCOPES as role -> scopes (validated by :meth:`validate`)."""
        return parse_role_scopes(self.oidc_role_scopes)

    def _validate_sign_in(self) -> None:
        if self.auth_mode not in {"dev", *SIGN_IN_MODES}:
            raise SettingsError(f"AUTH_MODE must be dev, oidc or auth0, not {self.auth_mode!r}")
        self.role_scopes  # noqa: B018 - parses, raising SettingsError on a malformed table
        if self.auth_mode == "dev":
            return
        issuer = self.issuer
        if not issuer:
            raise SettingsError("AUTH_MODE=oidc needs OIDC_ISSUER (auth0: AUTH0_DOMAIN)")
        loopback = issuer.startswith(("http://127.0.0.1", "http://localhost"))
        if not issuer.startswith("https://") and (self.is_production or not loopback):
            raise SettingsError(
                "OIDC_ISSUER must be https:// (plain http on loopback only, not in production)"
            )
        if self.is_production and not self.oidc_client_id:
            raise SettingsError("production needs OIDC_CLIENT_ID (the board's sign-in client)")

    def validate(self) -> Settings:
        """Refuse values the system cannot run with; production refuses development secrets."""
        if self.app_env not in {"development", "test", "production"}:
            raise SettingsError(f"APP_ENV must be development, test or production, not {self.app_env!r}")
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise SettingsError("TASK_SOFT_TIME_LIMIT_S must be below TASK_TIME_LIMIT_S")
        if self.broker_visibility_timeout_s <= self.task_time_limit_s + self.retry_backoff_max_s:
            raise SettingsError(
                "BROKER_VISIBILITY_TIMEOUT_S must exceed TASK_TIME_LIMIT_S + RETRY_BACKOFF_MAX_S, "
                "or the broker redelivers tasks that are still running"
            )
        if self.breaker_failure_threshold < 1 or self.breaker_sample_every < 1:
            raise SettingsError("BREAKER_FAILURE_THRESHOLD and BREAKER_SAMPLE_EVERY must be at least 1")
        if min(self.breaker_window_s, self.breaker_open_s, self.breaker_latency_window_s) <= 0:
            raise SettingsError("BREAKER_WINDOW_S, BREAKER_OPEN_S, BREAKER_LATENCY_WINDOW_S must be positive")
        if not 1 <= self.sync_coalesce_days <= 31:
            raise SettingsError(
                "SYNC_COALESCE_DAYS must be between 1 (off) and 31 (one GetAppointments window)"
            )
        if not 0 <= self.phi_open_memory_s <= 3600:
            raise SettingsError("PHI_OPEN_MEMORY_S must be between 0 (off) and 3600")
        self._validate_sign_in()
        if self.is_production:
            dev_values = {
                "PHI_HMAC_KEY": self.phi_hmac_key == DEV_PHI_HMAC_KEY,
                "PHI_ENCRYPTION_KEYS": DEV_PHI_ENCRYPTION_KEY in self.phi_encryption_keys,
                "AUDIT_SIGNING_KEY": self.audit_signing_key == DEV_AUDIT_SIGNING_KEY,
                "AUTH_MODE": self.auth_mode not in SIGN_IN_MODES,
                "AUTH0_AUDIENCE": self.audience in ("", Settings.auth0_audience),
                "METRICS_TOKEN": not self.metrics_token,
                "TEBRA_PASSWORD": self.tebra_password == Settings.tebra_password,
                "FLOWER_PASSWORD": self.flower_password == Settings.flower_password,
            }
            bad = sorted(name for name, is_dev in dev_values.items() if is_dev)
            if bad:
                raise SettingsError(f"production refuses development values for: {', '.join(bad)}")
        return self


def _convert(raw: str, default: Any) -> Any:
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


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from ``environ`` (default ``os.environ``); keyword overrides win (for tests)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in fields(Settings):
        name = field.name.upper()
        if name in env:
            try:
                values[field.name] = _convert(env[name], field.default)
            except ValueError as exc:
                raise SettingsError(f"{name}: {exc}") from exc
    values.update(overrides)
    return Settings(**values).validate()


def setting_names() -> list[str]:
    """The environment variable of every setting, in declaration order."""
    return [field.name.upper() for field in fields(Settings)]
