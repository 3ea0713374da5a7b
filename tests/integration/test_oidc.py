"""AUTH_MODE=oidc: the discovery document, keys read from its jwks_uri, a refresh that blocks nobody with a
cached key, roles mapped to scopes, the audit line naming the role, and the board's public sign-in config.

The provider here is a real HTTP server on loopback (tests/support/jwks_server.py) publishing a discovery
document and real RSA public keys; the browser tests run the whole sign-in against a real OpenID provider.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from app import create_app, tokens
from app.discovery import Discovery, DiscoveryUnavailable
from app.jwks import JwksCache
from app.scopes import Roles
from config import load_settings
from tests.support.jwks_server import JwksServer

AUDIENCE = "https://clinic-relay.test/api"
DAY = "2026-11-24"


@pytest.fixture
def provider() -> Iterator[JwksServer]:
    with JwksServer() as server:
        server.add_key()
        yield server


def token(server: JwksServer, key: RSAKey | None = None, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": server.issuer, "aud": AUDIENCE, "sub": "idp|nurse-1", "iat": now, "exp": now + 600}
    body.update(claims)
    key = key or server._keys[0]
    return jwt.encode({"alg": "RS256", "kid": key.kid}, body, key, algorithms=["RS256"])


@pytest.fixture
def oidc_app(base_env: dict[str, str], provider: JwksServer, redis_client: Any) -> Any:
    env = {
        **base_env,
        "AUTH_MODE": "oidc",
        "OIDC_ISSUER": provider.issuer,
        "OIDC_AUDIENCE": AUDIENCE,
        "OIDC_CLIENT_ID": "relay-board",
        "OIDC_ROLE_CLAIM": "https://clinic-relay.test/roles",
    }
    flask_app = create_app(load_settings(env))
    flask_app.testing = True
    return flask_app


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def test_discovery_reads_the_endpoints_and_checks_the_issuer(provider: JwksServer) -> None:
    metadata = Discovery(provider.issuer).metadata()
    assert metadata.jwks_uri == provider.url and metadata.token_endpoint.startswith(provider.issuer)
    assert metadata.end_session_endpoint == f"{provider.issuer}/logout"

    provider.discovery_issuer = "https://evil.example/"  # a document for another issuer is refused
    with pytest.raises(DiscoveryUnavailable):
        Discovery(provider.issuer).metadata()


def test_discovery_answers_from_its_cache_while_it_refreshes(provider: JwksServer) -> None:
    now = [0.0]
    discovery = Discovery(provider.issuer, ttl_s=60, clock=lambda: now[0])
    first = discovery.metadata()
    provider.discovery_issuer = "https://evil.example/"  # the refresh will fail its check
    now[0] = 120.0
    assert discovery.metadata() is first  # stale: served at once, one background refresh started
    deadline = time.monotonic() + 10
    while discovery.fetches < 2 or discovery._refreshing:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert discovery.metadata() is first, "a refused refresh keeps the good document"


def test_the_api_verifies_with_keys_from_the_discovery_document(oidc_app: Any, provider: JwksServer) -> None:
    client = oidc_app.test_client()
    url = f"/api/v1/patients?date={DAY}"
    assert client.get(url, headers=bearer(token(provider, scope="read:schedule"))).status_code == 200
    refused = client.get(url, headers=bearer(token(provider, scope="read:schedule", aud="https://other/api")))
    assert refused.status_code == 401
    other_issuer = token(provider, scope="read:schedule", iss="https://evil.example/")
    assert client.get(url, headers=bearer(other_issuer)).status_code == 401


def test_a_jwks_refresh_never_blocks_a_verification_with_a_cached_key(provider: JwksServer) -> None:
    now = [0.0]
    cache = JwksCache(provider.url, ttl_s=60, refetch_interval_s=10, clock=lambda: now[0])
    verifier = tokens.TokenVerifier(issuer=provider.issuer, audience=AUDIENCE, keys_for=cache.keys_for)
    verifier._verified = tokens.VerifiedTokens(ttl_s=0)  # every call goes to the key cache
    assert verifier.verify(token(provider))["sub"] == "idp|nurse-1"

    provider.hold()  # the provider accepts the next JWKS request and does not answer it
    now[0] = 61.0  # the cached set is stale
    answered = threading.Event()

    def verify_many() -> None:
        for _ in range(20):
            verifier.verify(token(provider))
        answered.set()

    worker = threading.Thread(target=verify_many, daemon=True)
    worker.start()
    assert provider.waiting.wait(10), "the stale set started a refresh"
    # Every verification finished while the refresh is still held open by the provider.
    assert answered.wait(10), "verifications with a cached key waited for the JWKS refresh"
    assert not provider._open.is_set() and cache.fetches == 2  # one refresh only, still in flight
    provider.release()


def test_roles_grant_scopes_and_the_audit_line_names_the_role(
    oidc_app: Any, provider: JwksServer, redis_client: Any
) -> None:
    client = oidc_app.test_client()
    clinician = token(provider, sub="idp|dr-2", **{"https://clinic-relay.test/roles": ["clinician"]})
    ops = token(provider, sub="idp|ops-3", **{"https://clinic-relay.test/roles": "ops"})
    nobody = token(provider, sub="idp|x-4", **{"https://clinic-relay.test/roles": ["visitor"]})
    assert client.get(f"/api/v1/patients?date={DAY}", headers=bearer(clinician)).status_code == 200
    refused = client.post(f"/api/v1/schedule/sync?date={DAY}", headers=bearer(clinician))
    assert refused.status_code == 403 and refused.get_json()["error"]["details"]["required_scope"] == (
        "sync:schedule"
    )
    assert client.get("/api/v1/ops/breaker", headers=bearer(ops)).status_code == 200
    assert client.get(f"/api/v1/patients?date={DAY}", headers=bearer(nobody)).status_code == 403
    records = [fields for _, fields in redis_client.xrange("audit") if fields["sub"] == "idp|dr-2"]
    assert [(r["role"], r["outcome"]) for r in records] == [("clinician", "ok"), ("clinician", "FORBIDDEN")]


def test_roles_read_nested_claims_and_unknown_scopes_are_refused() -> None:
    keycloak = Roles("realm_access.roles", {"front-desk": ("read:schedule", "sync:schedule")})
    assert keycloak.of({"realm_access": {"roles": ["front-desk", 7]}}) == ["front-desk"]
    assert keycloak.scopes(["front-desk", "other"]) == {"read:schedule", "sync:schedule"}
    with pytest.raises(ValueError, match="unknown scopes"):
        Roles("roles", {"ops": ("ops:everything",)})


def test_the_board_config_names_the_provider_and_the_page_may_reach_only_its_origin(
    oidc_app: Any, provider: JwksServer
) -> None:
    client = oidc_app.test_client()
    body = client.get("/board/config").get_json()
    assert body["dev_token"] is False
    assert body["auth"] == {
        "mode": "oidc",
        "issuer": provider.issuer,
        "client_id": "relay-board",
        "audience": AUDIENCE,
        "scope": "openid profile email offline_access",
        "audience_params": ["audience", "resource"],
        "authorization_endpoint": f"{provider.issuer}/authorize",
        "token_endpoint": f"{provider.issuer}/oauth/token",
        "end_session_endpoint": f"{provider.issuer}/logout",
        "role_claim": "https://clinic-relay.test/roles",
        "roles": {
            "front-desk": ["read:schedule", "sync:schedule", "write:patients"],
            "clinician": ["read:schedule", "write:patients"],
            "ops": ["read:schedule", "ops:breaker"],
        },
    }
    policy = client.get("/").headers["Content-Security-Policy"]
    assert f"connect-src 'self' {provider.issuer} " in policy
    assert "unsafe-inline" not in policy and "script-src 'self';" in policy
    assert client.get("/dev/token").status_code == 404


def test_the_board_config_says_clearly_when_the_provider_cannot_be_reached(
    oidc_app: Any, provider: JwksServer
) -> None:
    provider.discovery_issuer = "https://evil.example/"
    response = oidc_app.test_client().get("/board/config")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
