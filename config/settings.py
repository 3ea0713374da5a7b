"""Every setting of Clinic Relay, read from the environment in this one place.

Settings are data: a frozen dataclass built by :func:`load_settings` from a mapping (``os.environ`` by
default). Nothing here opens a connection or a file. Each default runs the whole stack locally (`make run`):
Redis on 127.0.0.1:6379, the Tebra simulator on 127.0.0.1:8089 with its development credentials.
``.env.example`` lists every variable with its default and meaning; a test keeps the two in step.

Fail closed: ``APP_ENV`` has no default. A process started without it stops at once and names it, so a
deployment that forgot its environment never comes up in development mode (open token route, published
keys). ``make run`` sets ``development``, ``make test`` sets ``test``. Production refuses weak or published
secrets and development endpoints, and reports every refusal in one message (docs/security.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import time as time_of_day
from typing import Any

from config.parsing import APP_ENVS, SIGN_IN_MODES, SettingsError, convert, is_loopback, parse_role_scopes
from config.production import (
    DEV_AUDIT_RECORD_KEY,
    DEV_AUDIT_SIGNING_KEY,
    DEV_PHI_ENCRYPTION_KEY,
    DEV_PHI_HMAC_KEY,
    production_problems,
)


@dataclass(frozen=True)
class Settings:
    """The whole configuration. Field names are the environment variables, lower-cased."""

    app_env: str = ""  # development | test | production; no default: a process without it refuses to start
    log_level: str = "INFO"

    # Redis: one server carries the broker, the result backend, the data and the events.
    redis_url: str = "redis://127.0.0.1:6379/0"
    celery_broker_url: str = ""  # empty: same as REDIS_URL
    celery_result_backend: str = ""  # empty: same as REDIS_URL
    redis_socket_timeout_s: float = 5.0
    redis_connect_timeout_s: float = 2.0
    # Redis high availability and transport security (docs/operations.md, "High availability"). With
    # REDIS_SENTINELS set every client asks the sentinels for the primary of REDIS_SENTINEL_MASTER; the URLs
    # above then give only the scheme (rediss:// is TLS), user, password and database.
    redis_sentinels: str = ""  # host:port,host:port,...; empty: REDIS_URL's server is the one Redis
    redis_sentinel_master: str = "relay"
    redis_sentinel_password: str = ""  # the sentinels' own requirepass, if they have one
    redis_tls_ca_file: str = ""  # rediss://: the CA the server's certificate is verified against
    redis_tls_cert_file: str = ""  # rediss://: a client certificate, for servers that ask for one
    redis_tls_key_file: str = ""
    # Acknowledged means kept: with REDIS_SENTINELS set, a clinic's status change, its audit record and an
    # accepted sync answer 2xx only once a replica has them (WAIT 1 <ms>), else 503. 0: never wait.
    redis_wait_replica_ms: int = 1000

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
    # still gets throttled in the wild (docs/tebra.md, "Rate limits").
    tebra_throttle_margin: float = 0.08
    # ...and this many ms more, whatever the interval: live clients saw 429s at exactly the published one.
    tebra_throttle_margin_ms: int = 250
    tebra_throttle_enabled: bool = True
    tebra_wsdl_cache_s: int = 86400
    tebra_throttles_refresh_minutes: int = 60  # workers re-read GetThrottles this often (0: never)
    # KEY=value lines (TEBRA_USER, TEBRA_PASSWORD, TEBRA_CUSTOMER_KEY) that win over the three settings; read
    # when a worker starts and again when an operator resumes after a credentials refusal (docs/tebra.md).
    tebra_credentials_file: str = ""

    clinic_tz: str = "America/Chicago"

    # Web process.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    cors_origins: str = ""  # comma-separated allow-list; empty: same origin only
    # Host names the API answers to, besides loopback (DNS rebinding; ".example.org" covers subdomains).
    trusted_hosts: str = ""
    # Origins whose pages may open /ws, besides the API's own (and loopback in development and tests).
    allowed_origins: str = ""
    trusted_proxies: int = 0  # how many X-Forwarded-For hops to trust
    max_range_days: int = 31
    ws_ping_interval_s: float = 25.0
    ws_send_buffer_bytes: int = 262144  # a socket whose kernel buffer is this full is dropped as slow
    # /ws bounds (docs/realtime.md, "Limits"): open sockets per client IP and per token subject, sockets still
    # waiting for their auth message per process, and how fast those must authenticate.
    ws_max_per_ip: int = 50
    ws_max_per_user: int = 20
    ws_max_unauthenticated: int = 64
    ws_auth_timeout_s: float = 2.0
    ws_replay_max_events: int = 1000  # stream entries one subscribe-with-since may read; more: replay_gap

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
    # How often beat's sweep looks for accepted syncs whose broker message was lost (tasks/sync/sweep.py); a
    # lost one is sent again after two sweeps. 0: no sweep.
    sync_sweep_interval_s: int = 60
    # A full sync also takes the queued full syncs of the days that follow it, up to this many days in all,
    # into its one GetAppointments (docs/tebra.md, "Coalesced syncs"); 1 turns it off.
    sync_coalesce_days: int = 7
    periodic_sync_minutes: int = 0  # 0: no periodic sync of today (the watch keeps the horizon fresh)
    # The watch (docs/tebra.md, "The watch"): one GetAppointments per poll, for every appointment modified
    # since the last poll whose start is today .. today + SYNC_HORIZON_DAYS (one Tebra window of <= 31 days).
    sync_horizon_days: int = 14
    tebra_poll_interval_s: int = 300  # during CLINIC_HOURS; 0: no watch
    tebra_poll_interval_off_hours_s: int = 3600
    clinic_hours: str = "07:00-19:00"  # in CLINIC_TZ
    full_reconcile_minutes: int = 60  # a full read (which catches deletions) at least this often
    # Incremental reads ask from this long before the last read began, plus how far Tebra's LastModifiedDate
    # stamps were measured to run behind our clock (tasks/sync/clock.py).
    tebra_modified_overlap_s: int = 300
    # A full read with no real rows for a day that holds some is kept as suspect_empty; only a second empty
    # full read at least this long after the first empties the day (docs/tebra.md, "Bad days").
    empty_confirm_minutes: int = 10
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
    # The producers' key: the API tags each record with it, the writer refuses records without a valid tag.
    audit_record_key: str = DEV_AUDIT_RECORD_KEY
    # The signed checkpoint of the log's head, outside Redis and best on other storage; empty: the log's
    # path + ".anchor". An emptied, shortened or replaced log no longer matches it (docs/security.md).
    audit_anchor_path: str = ""
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

    def sign_in_problems(self) -> list[str]:
        """What is wrong with the sign-in settings, each naming its setting (empty: nothing)."""
        if self.auth_mode not in {"dev", *SIGN_IN_MODES}:
            return [f"AUTH_MODE: must be dev, oidc or auth0, not {self.auth_mode!r}"]
        self.role_scopes  # noqa: B018 - parses, raising SettingsError on a malformed table
        if self.auth_mode == "dev":
            return []
        issuer = self.issuer
        if not issuer:
            return ["OIDC_ISSUER: AUTH_MODE=oidc needs it (auth0: AUTH0_DOMAIN)"]
        problems = []
        loopback = issuer.startswith(("http://127.0.0.1", "http://localhost"))
        if not issuer.startswith("https://") and (self.is_production or not loopback):
            problems.append("OIDC_ISSUER: must be https:// (plain http on loopback only, not in production)")
        if self.is_production and not self.oidc_client_id:
            problems.append("OIDC_CLIENT_ID: production needs it (the board's sign-in client)")
        return problems

    def bind_addresses(self) -> dict[str, str]:
        """Every address a process of the system listens on, by setting name."""
        return {
            "API_HOST": self.api_host,
            "FLOWER_ADDRESS": self.flower_address,
            "WORKER_METRICS_ADDRESS": self.worker_metrics_address,
            "SIM_HOST": self.sim_host,
        }

    def validate(self) -> Settings:
        """Refuse values the system cannot run with; production refuses development secrets."""
        if not self.app_env:
            raise SettingsError("APP_ENV is not set: choose development, test or production")
        if self.app_env not in APP_ENVS:
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
        # A lost sync is resent on the second sweep that misses it: well before its lock expires.
        sweep_s = self.sync_sweep_interval_s
        if sweep_s != 0 and not 2 <= sweep_s <= self.sync_lock_ttl_s / 3:
            raise SettingsError("SYNC_SWEEP_INTERVAL_S must be 0 (off) or between 2 and SYNC_LOCK_TTL_S / 3")
        if not 1 <= self.sync_coalesce_days <= 31:
            raise SettingsError(
                "SYNC_COALESCE_DAYS must be between 1 (off) and 31 (one GetAppointments window)"
            )
        self._validate_watch()
        self._validate_redis()
        if min(self.ws_max_per_ip, self.ws_max_per_user, self.ws_max_unauthenticated) < 1:
            raise SettingsError("WS_MAX_PER_IP, WS_MAX_PER_USER, WS_MAX_UNAUTHENTICATED must be at least 1")
        if not 0 < self.ws_auth_timeout_s <= 30 or self.ws_replay_max_events < 1:
            raise SettingsError("WS_AUTH_TIMEOUT_S must be in (0, 30] and WS_REPLAY_MAX_EVENTS at least 1")
        if self.empty_confirm_minutes < 0 or self.tebra_throttles_refresh_minutes < 0:
            raise SettingsError("EMPTY_CONFIRM_MINUTES and TEBRA_THROTTLES_REFRESH_MINUTES must be 0 or more")
        if self.tebra_throttle_margin_ms < 0:
            raise SettingsError("TEBRA_THROTTLE_MARGIN_MS must be 0 or more")
        if not 0 <= self.phi_open_memory_s <= 3600:
            raise SettingsError("PHI_OPEN_MEMORY_S must be between 0 (off) and 3600")
        sign_in = self.sign_in_problems()
        if sign_in and not self.is_production:  # production lists them with all its other refusals
            raise SettingsError(sign_in[0])
        if self.app_env == "development":
            exposed = [name for name, host in self.bind_addresses().items() if not is_loopback(host)]
            if exposed:
                raise SettingsError(
                    f"development binds loopback only (its token route mints any scope): {', '.join(exposed)}"
                )
        if self.is_production:
            problems = production_problems(self)
            if problems:
                raise SettingsError(
                    f"production refuses {len(problems)} setting(s):\n  " + "\n  ".join(problems)
                )
        return self

    def _validate_redis(self) -> None:
        for part in self.redis_sentinels.split(","):
            host, _, port = part.strip().rpartition(":")
            if part.strip() and not (host and port.isdigit()):
                raise SettingsError(f"REDIS_SENTINELS must be host:port,host:port,... not {part.strip()!r}")
        if self.redis_sentinels and not self.redis_sentinel_master:
            raise SettingsError("REDIS_SENTINEL_MASTER must name the primary the sentinels watch")
        if bool(self.redis_tls_cert_file) != bool(self.redis_tls_key_file):
            raise SettingsError("REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together")
        if not 0 <= self.redis_wait_replica_ms <= 60000:
            raise SettingsError("REDIS_WAIT_REPLICA_MS must be between 0 (off) and 60000")
        # Only with sentinels is there a WAIT (tasks/connections.py), and then it must end before the socket
        # timeout, or it would be cut off as a lost connection.
        if self.redis_sentinels and self.redis_wait_replica_ms >= self.redis_socket_timeout_s * 1000:
            raise SettingsError("REDIS_WAIT_REPLICA_MS must be below REDIS_SOCKET_TIMEOUT_S (in ms)")

    def _validate_watch(self) -> None:
        if not 0 <= self.sync_horizon_days <= 30:
            raise SettingsError("SYNC_HORIZON_DAYS must be between 0 and 30 (one GetAppointments window)")
        if self.tebra_poll_interval_s != 0 and not 5 <= self.tebra_poll_interval_s <= 3600:
            raise SettingsError("TEBRA_POLL_INTERVAL_S must be 0 (off) or between 5 and 3600")
        if not 5 <= self.tebra_poll_interval_off_hours_s <= 86400:
            raise SettingsError("TEBRA_POLL_INTERVAL_OFF_HOURS_S must be between 5 and 86400")
        if not 1 <= self.full_reconcile_minutes <= 1440:
            raise SettingsError("FULL_RECONCILE_MINUTES must be between 1 and 1440")
        if not 0 <= self.tebra_modified_overlap_s <= 86400:
            raise SettingsError("TEBRA_MODIFIED_OVERLAP_S must be between 0 and 86400")
        self.clinic_hours_range()

    def clinic_hours_range(self) -> tuple[time_of_day, time_of_day]:
        """CLINIC_HOURS as (opens, closes) wall times in CLINIC_TZ."""
        try:
            opens, closes = (time_of_day.fromisoformat(part.strip()) for part in self.clinic_hours.split("-"))
        except ValueError:
            raise SettingsError(f"CLINIC_HOURS must be HH:MM-HH:MM, not {self.clinic_hours!r}") from None
        if opens >= closes:
            raise SettingsError("CLINIC_HOURS must open before it closes (HH:MM-HH:MM, same day)")
        return opens, closes


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from ``environ`` (default ``os.environ``); keyword overrides win (for tests)."""
    env = os.environ if environ is None else environ
    if "APP_ENV" not in env and "app_env" not in overrides:
        raise SettingsError("APP_ENV is not set: choose development, test or production")
    values: dict[str, Any] = {}
    for field in fields(Settings):
        name = field.name.upper()
        if name in env:
            try:
                values[field.name] = convert(env[name], field.default)
            except ValueError as exc:
                raise SettingsError(f"{name}: {exc}") from exc
    values.update(overrides)
    return Settings(**values).validate()


def setting_names() -> list[str]:
    """The environment variable of every setting, in declaration order."""
    return [field.name.upper() for field in fields(Settings)]
