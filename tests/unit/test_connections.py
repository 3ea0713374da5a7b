"""How settings choose a Redis client's form: one server, or the sentinels' primary (tasks/connections.py)."""

from __future__ import annotations

import ssl

import pytest
import redis

from config import SettingsError, load_settings
from tasks import connections
from tasks.celery_factory import celery_config


def test_without_sentinels_every_url_is_used_as_it_is() -> None:
    settings = load_settings({"APP_ENV": "test", "REDIS_URL": "redis://127.0.0.1:6379/2"})
    assert connections.celery_url(settings, settings.broker_url) == "redis://127.0.0.1:6379/2"
    config = celery_config(settings)
    assert config["broker_transport"] == "tasks.broker_transport:Transport"
    assert "broker_use_ssl" not in config and "master_name" not in config["broker_transport_options"]  # type: ignore[operator]
    assert connections.client(settings).connection_pool.connection_kwargs["db"] == 2


def test_with_sentinels_the_url_gives_user_password_and_database_only() -> None:
    settings = load_settings(
        {
            "APP_ENV": "test",
            "REDIS_URL": "redis://relay:s%40cret@ignored:1/3",
            "CELERY_BROKER_URL": "redis://relay:s%40cret@ignored:1/4",
            "REDIS_SENTINELS": "10.0.0.1:26379, 10.0.0.2:26380",
            "REDIS_SENTINEL_MASTER": "clinic",
        }
    )
    assert connections.sentinel_hosts(settings) == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    assert connections.celery_url(settings, settings.broker_url) == (
        "sentinel://relay:s%40cret@10.0.0.1:26379/4;sentinel://relay:s%40cret@10.0.0.2:26380/4"
    )
    config = celery_config(settings)
    assert config["broker_transport"] == "tasks.broker_transport:SentinelTransport"
    assert config["broker_transport_options"]["master_name"] == "clinic"  # type: ignore[index]
    assert config["result_backend_transport_options"]["master_name"] == "clinic"  # type: ignore[index]
    client = connections.client(settings)  # built without I/O: the sentinels are asked on first use
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (3, "relay", "s@cret")
    assert client.connection_pool.service_name == "clinic"  # type: ignore[attr-defined]


def test_rediss_verifies_the_server_and_may_present_a_client_certificate() -> None:
    settings = load_settings(
        {
            "APP_ENV": "test",
            "REDIS_URL": "rediss://127.0.0.1:6380/0",
            "REDIS_TLS_CA_FILE": "/etc/relay/ca.pem",
            "REDIS_TLS_CERT_FILE": "/etc/relay/client.pem",
            "REDIS_TLS_KEY_FILE": "/etc/relay/client.key",
        }
    )
    expected = {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": "/etc/relay/ca.pem",
        "ssl_certfile": "/etc/relay/client.pem",
        "ssl_keyfile": "/etc/relay/client.key",
    }
    config = celery_config(settings)
    assert config["broker_use_ssl"] == expected and config["redis_backend_use_ssl"] == expected
    kwargs = connections.client(settings).connection_pool.connection_kwargs
    assert {key: kwargs[key] for key in expected} == expected
    assert issubclass(connections.client(settings).connection_pool.connection_class, redis.SSLConnection)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_SENTINELS": "10.0.0.1"}, "REDIS_SENTINELS must be host:port"),
        ({"REDIS_SENTINELS": "10.0.0.1:26379", "REDIS_SENTINEL_MASTER": ""}, "REDIS_SENTINEL_MASTER"),
        ({"REDIS_TLS_CERT_FILE": "/etc/relay/client.pem"}, "REDIS_TLS_KEY_FILE go together"),
        ({"REDIS_WAIT_REPLICA_MS": "-1"}, "REDIS_WAIT_REPLICA_MS"),
        (
            {"REDIS_SENTINELS": "10.0.0.1:2", "REDIS_SOCKET_TIMEOUT_S": "1", "REDIS_WAIT_REPLICA_MS": "1000"},
            "below REDIS_SOCKET_TIMEOUT_S",
        ),
    ],
)
def test_bad_redis_settings_are_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings({"APP_ENV": "test", **env})


def test_a_switch_to_the_next_sentinel_keeps_our_broker_transport() -> None:
    """kombu takes the transport of a failover alternate from its URL's scheme: ours must still be the one."""
    from tasks.broker_transport import SentinelTransport
    from tasks.celery_factory import create_celery

    settings = load_settings(
        {"APP_ENV": "test", "REDIS_SENTINELS": "127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381"}
    )
    connection = create_celery(settings).connection_for_write()
    assert isinstance(connection.transport, SentinelTransport)
    connection.maybe_switch_next()  # what a worker does after a lost connection
    assert connection.host.endswith(":26380")
    assert isinstance(connection.transport, SentinelTransport)
