"""Host and Origin allow-lists: DNS rebinding and cross-site WebSocket hijacking fail, in development too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from app import create_app
from app.trusted_hosts import host_is_trusted, origin_is_allowed, trusted_names
from config import load_settings


def dev_client(base_env: dict[str, str], tmp_path: Path, **env: str) -> Any:
    settings = {**base_env, "APP_ENV": "development", "DEV_KEY_PATH": str(tmp_path / "key.pem"), **env}
    flask_app = create_app(load_settings(settings))
    flask_app.testing = True
    return flask_app.test_client()


def test_dns_rebinding_cannot_reach_the_development_token(base_env: dict[str, str], tmp_path: Path) -> None:
    """evil.example re-points its name at 127.0.0.1: the browser sends Host: evil.example, refused."""
    client = dev_client(base_env, tmp_path)
    refused = client.get("/dev/token", headers={"Host": "evil.example:8000"})
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "VALIDATION_ERROR"
    assert "token" not in refused.get_json()
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST"):
        assert client.get("/dev/token", headers={"Host": host}).status_code == 200, host


def test_every_route_refuses_an_untrusted_host(client: Any) -> None:
    for path in ("/health", "/api/v1/providers", "/", "/metrics", "/ws"):
        assert client.get(path, headers={"Host": "rebound.example"}).status_code == 400, path
    assert client.get("/health", headers={"Host": "bad host!"}).status_code == 400


def test_trusted_hosts_names_the_public_hosts(base_env: dict[str, str], tmp_path: Path) -> None:
    client = dev_client(base_env, tmp_path, TRUSTED_HOSTS="relay.clinic.example, .board.example")
    for host in ("relay.clinic.example", "relay.clinic.example:443", "a.board.example", "board.example"):
        assert client.get("/health", headers={"Host": host}).status_code == 200, host
    for host in ("clinic.example", "evilboard.example", "relay.clinic.example.evil.example"):
        assert client.get("/health", headers={"Host": host}).status_code == 400, host
    names = trusted_names(load_settings({"APP_ENV": "test", "TRUSTED_HOSTS": "[2001:db8::1]"}))
    assert host_is_trusted("[2001:db8::1]:8000", names)


def test_a_socket_from_a_foreign_origin_is_refused_before_the_upgrade(
    api_server: str, make_token: Any
) -> None:
    url = api_server.replace("http://", "ws://") + "/ws"
    token = {"Authorization": f"Bearer {make_token()}"}
    with pytest.raises(InvalidStatus) as refused:
        connect(url, open_timeout=5, origin="https://evil.example", additional_headers=token)  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    for origin in (api_server, "http://localhost:3000", None):  # its own page, a local dev server, no browser
        with connect(url, open_timeout=5, origin=origin, additional_headers=token) as ws:  # type: ignore[arg-type]
            ws.send('{"type": "ping"}')
            assert ws.recv(timeout=5) == '{"type":"pong"}'


def test_production_allows_only_its_own_and_the_listed_origins() -> None:
    allowed = frozenset({"https://board.clinic.example"})
    own = "relay.clinic.example"
    assert origin_is_allowed("https://board.clinic.example/", own, allowed, loopback_ok=False)
    assert origin_is_allowed("https://relay.clinic.example", own, allowed, loopback_ok=False)
    for origin in ("http://localhost:3000", "https://evil.example", "null", "file://"):
        assert not origin_is_allowed(origin, own, allowed, loopback_ok=False), origin
