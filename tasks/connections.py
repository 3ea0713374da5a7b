"""Every Redis client of every process is built here: one Redis, or the primary the sentinels name.

Two forms, chosen by settings alone (docs/operations.md, "High availability"):

- ``REDIS_URL`` alone: the one server it names (``redis://`` or ``rediss://``), as ``make run`` uses.
- ``REDIS_SENTINELS`` set: the URL still gives the scheme (``rediss://`` is TLS), user, password and
  database, but the host is whichever server the sentinels call the primary of ``REDIS_SENTINEL_MASTER``.
  redis-py asks the sentinels again on each new connection, so after a failover the next command reaches
  the new primary; Lua scripts go through redis-py's ``Script``, which sends the body again on NOSCRIPT.

TLS (``rediss://``) verifies the server against ``REDIS_TLS_CA_FILE`` (else the system's CAs) and presents
``REDIS_TLS_CERT_FILE``/``REDIS_TLS_KEY_FILE`` when given; the sentinels are then spoken to over TLS too.
Celery's broker and result backend get the same choice as kombu/celery settings (:func:`celery_options`).

The per-process client is built on first use and rebuilt in a forked child (no I/O at import).
"""

from __future__ import annotations

import os
import ssl
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from config import Settings

_lock = threading.Lock()
_client: redis.Redis | None = None
_client_pid: int | None = None
_client_url: str | None = None


def sentinel_hosts(settings: Settings) -> list[tuple[str, int]]:
    """REDIS_SENTINELS as (host, port) pairs; empty when Redis is one server."""
    hosts = []
    for part in settings.redis_sentinels.split(","):
        if part.strip():
            host, _, port = part.strip().rpartition(":")
            hosts.append((host, int(port)))
    return hosts


def _url_parts(url: str) -> dict[str, Any]:
    """What a Redis URL says besides its host: database, user, password, TLS."""
    parts = urlsplit(url)
    path = parts.path.lstrip("/")
    return {
        "db": int(path) if path else 0,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "tls": parts.scheme == "rediss",
    }


def tls_options(settings: Settings) -> dict[str, Any]:
    """redis-py's (and kombu's) TLS arguments: the server's certificate is always verified."""
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if settings.redis_tls_ca_file:
        options["ssl_ca_certs"] = settings.redis_tls_ca_file
    if settings.redis_tls_cert_file:
        options["ssl_certfile"] = settings.redis_tls_cert_file
        options["ssl_keyfile"] = settings.redis_tls_key_file or None
    return options


def _sentinel_kwargs(settings: Settings, tls: bool, timeout_s: float, connect_s: float) -> dict[str, Any]:
    """How a client speaks to the sentinels themselves: short timeouts, TLS when the data is on TLS."""
    kwargs: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": connect_s}
    if settings.redis_sentinel_password:
        kwargs["password"] = settings.redis_sentinel_password
    if tls:
        kwargs.update(ssl=True, **tls_options(settings))
    return kwargs


def client(
    settings: Settings,
    url: str | None = None,
    *,
    socket_timeout_s: float | None = None,
    connect_timeout_s: float | None = None,
    **options: Any,
) -> redis.Redis:
    """A client of ``url`` (default REDIS_URL), or of the sentinels' primary; ``options`` go to redis-py."""
    url = url or settings.redis_url
    timeout = settings.redis_socket_timeout_s if socket_timeout_s is None else socket_timeout_s
    connect = settings.redis_connect_timeout_s if connect_timeout_s is None else connect_timeout_s
    options.update(socket_timeout=timeout, socket_connect_timeout=connect)
    parts = _url_parts(url)
    tls = parts.pop("tls")
    if tls:
        options.update(tls_options(settings))
    hosts = sentinel_hosts(settings)
    if not hosts:
        return redis.Redis.from_url(url, **options)
    options.update({key: value for key, value in parts.items() if value is not None})
    sentinel = Sentinel(
        hosts, sentinel_kwargs=_sentinel_kwargs(settings, tls, timeout, connect), ssl=tls, **options
    )
    found: redis.Redis = sentinel.master_for(settings.redis_sentinel_master, redis_class=redis.Redis)
    return found


def wait_replica_ms(settings: Settings) -> int:
    """How long a kept write waits for one replica (``WAIT 1 <ms>``); 0 when Redis is one server or it is off.

    Without REDIS_SENTINELS there is no replica to wait for: a single node never pays for it.
    """
    return settings.redis_wait_replica_ms if settings.redis_sentinels else 0


def make_redis(settings: Settings, url: str | None = None) -> redis.Redis:
    """A new data client with timeouts on every edge, decoding replies to str."""
    return client(
        settings,
        url,
        decode_responses=True,
        health_check_interval=30,
        # Commands retried once on a dropped connection; a restarted Redis is met again, not a crash.
        retry_on_timeout=False,
    )


def celery_url(settings: Settings, url: str) -> str:
    """The broker or result-backend URL Celery is given: ``url`` itself, or the sentinels' (kombu's form)."""
    hosts = sentinel_hosts(settings)
    if not hosts:
        return url
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    auth = f"{auth}@" if auth else ""
    db = parts.path.lstrip("/") or "0"
    return ";".join(f"sentinel://{auth}{host}:{port}/{db}" for host, port in hosts)


def celery_options(settings: Settings) -> dict[str, Any]:
    """Celery settings for the broker's and result backend's transport: the sentinels' master name, TLS."""
    found: dict[str, Any] = {}
    broker_tls = _url_parts(settings.broker_url)["tls"]
    backend_tls = _url_parts(settings.result_backend)["tls"]
    if broker_tls:
        found["broker_use_ssl"] = tls_options(settings)
    if backend_tls:
        found["redis_backend_use_ssl"] = tls_options(settings)
    if sentinel_hosts(settings):
        timeout, connect = settings.redis_socket_timeout_s, settings.redis_connect_timeout_s
        found["broker_sentinel"] = {
            "master_name": settings.redis_sentinel_master,
            "sentinel_kwargs": _sentinel_kwargs(settings, broker_tls, timeout, connect),
        }
        found["backend_sentinel"] = {
            "master_name": settings.redis_sentinel_master,
            "sentinel_kwargs": _sentinel_kwargs(settings, backend_tls, timeout, connect),
        }
    return found


def get_redis(settings: Settings) -> redis.Redis:
    """This process's shared client (thread-safe; a child after fork gets a fresh pool)."""
    global _client, _client_pid, _client_url
    pid = os.getpid()
    if _client is not None and _client_pid == pid and _client_url == settings.redis_url:
        return _client
    with _lock:
        if _client is None or _client_pid != pid or _client_url != settings.redis_url:
            _client = make_redis(settings)
            _client_pid = pid
            _client_url = settings.redis_url
        return _client


def reset_redis() -> None:
    """Forget this process's client; the next get_redis builds a new one (after fork, in tests)."""
    global _client, _client_pid, _client_url
    with _lock:
        _client, _client_pid, _client_url = None, None, None
