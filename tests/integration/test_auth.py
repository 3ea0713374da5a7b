"""Bearer tokens on the real app: RS256 keys served by a local JWKS server over HTTP, every attack refused.

The app is the in-process Flask app on the test Redis; its verifier is pointed at a real HTTP server that
publishes real RSA public keys (tests/support/jwks_server.py), the way Auth0 publishes its tenant's keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from app import auth, scopes, tokens
from app.auth import install_verifier
from app.discovery import Discovery
from app.jwks import JwksCache
from app.realtime.access import EXTENSION_KEY as WS_KEY
from app.realtime.access import SocketAuthError
from app.tokens import TokenVerifier
from config import SettingsError, load_settings
from tests.support.jwks_server import JwksServer, new_key
from tests.unit.test_fail_closed import STRONG

ISSUER = "https://clinic-test.us.auth0.com/"
AUDIENCE = "https://clinic-relay.test/api"
TODAY = date.today().isoformat()
READ_URL = f"/api/v1/appointments?start={TODAY}"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(key: RSAKey, *, header: dict[str, Any] | None = None, **overrides: Any) -> str:
    """An RS256 token with good claims (every scope, valid for an hour); keyword arguments replace claims."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "auth0|user-1",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "scope": " ".join(scopes.ALL_SCOPES),
    }
    claims.update(overrides)
    claims = {name: value for name, value in claims.items() if value is not None}
    protected = {"alg": "RS256", "kid": key.kid, **(header or {})}
    protected = {name: value for name, value in protected.items() if value is not None}
    return jwt.encode(protected, claims, key, algorithms=["RS256"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    """A local JWKS server over HTTP with one published key."""
    with JwksServer() as server:
        server.add_key()
        yield server


@pytest.fixture
def signing_key(jwks: JwksServer) -> RSAKey:
    return jwks._keys[0]


def make_verifier(server: JwksServer, **cache_options: Any) -> tuple[TokenVerifier, JwksCache]:
    cache = JwksCache(server.url, **cache_options)
    return TokenVerifier(issuer=ISSUER, audience=AUDIENCE, keys_for=cache.keys_for), cache


@pytest.fixture
def auth0_app(app: Any, jwks: JwksServer) -> Any:
    """The app verifying tokens as in Auth0 mode, against the local JWKS server."""
    verifier, _ = make_verifier(jwks)
    install_verifier(app, verifier)
    return app


def assert_401(response: Any, error: str | None = "invalid_token") -> None:
    assert response.status_code == 401, response.get_data(as_text=True)
    body = response.get_json()
    assert body["success"] is False and body["error"]["code"] == "UNAUTHORIZED"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="clinic-relay"')
    if error:
        assert f'error="{error}"' in challenge
    else:
        assert "error=" not in challenge


def test_a_good_token_reads(auth0_app: Any, signing_key: RSAKey) -> None:
    response = auth0_app.test_client().get(READ_URL, headers=bearer(sign(signing_key)))
    assert response.status_code == 200, response.get_data(as_text=True)


def _alg_none(key: RSAKey) -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64(json.dumps(jwt.decode(sign(key), key).claims).encode())
    return f"{header}.{payload}."


def _hs256_with_public_key(key: RSAKey) -> str:
    # The classic confusion attack: HMAC keyed with the RSA public key a verifier might pass as the secret.
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    payload = b64(json.dumps(jwt.decode(sign(key), key).claims).encode())
    secret = key.as_pem(private=False)
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def _tampered_payload(key: RSAKey) -> str:
    header, payload, signature = sign(key, scope="read:schedule").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = " ".join(scopes.ALL_SCOPES)
    claims["sub"] = "auth0|someone-else"
    return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"


def _tampered_signature(key: RSAKey) -> str:
    header, payload, signature = sign(key).split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[len(raw) // 2] ^= 0x01
    return f"{header}.{payload}.{b64(bytes(raw))}"


ATTACKS = {
    "alg none": _alg_none,
    "HS256 signed with the public key": _hs256_with_public_key,
    "expired": lambda key: sign(key, iat=int(time.time()) - 7200, exp=int(time.time()) - 120),
    "not yet valid": lambda key: sign(key, nbf=int(time.time()) + 120),
    "wrong issuer": lambda key: sign(key, iss="https://evil.example/"),
    "issuer without trailing slash": lambda key: sign(key, iss=ISSUER.rstrip("/")),
    "wrong audience": lambda key: sign(key, aud="https://another-api.example/"),
    "no audience": lambda key: sign(key, aud=None),
    "no expiry": lambda key: sign(key, exp=None),
    "no subject": lambda key: sign(key, sub=None),
    "unknown kid": lambda key: sign(new_key(), header={"kid": "not-published"}),
    "right kid, other key": lambda key: sign(new_key(), header={"kid": key.kid}),
    "no kid": lambda key: sign(key, header={"kid": None}),
    "tampered payload": _tampered_payload,
    "tampered signature": _tampered_signature,
    "not a JWT": lambda key: "abc.def",
    "RS512 (not on the allow-list)": lambda key: jwt.encode(
        {"alg": "RS512", "kid": key.kid}, jwt.decode(sign(key), key).claims, key, algorithms=["RS512"]
    ),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_is_refused(auth0_app: Any, signing_key: RSAKey, attack: str) -> None:
    token = ATTACKS[attack](signing_key)
    assert_401(auth0_app.test_client().get(READ_URL, headers=bearer(token)))


def test_missing_token(auth0_app: Any) -> None:
    assert_401(auth0_app.test_client().get(READ_URL), error=None)


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer a b", "Token abc"])
def test_malformed_authorization_header(auth0_app: Any, header: str) -> None:
    assert_401(auth0_app.test_client().get(READ_URL, headers={"Authorization": header}), "invalid_request")


def test_a_new_key_works_without_restart_and_a_rotated_out_key_stops(app: Any, jwks: JwksServer) -> None:
    verifier, _ = make_verifier(jwks, ttl_s=1.0, refetch_interval_s=0.2)
    install_verifier(app, verifier)
    client = app.test_client()
    old = jwks._keys[0]
    assert client.get(READ_URL, headers=bearer(sign(old))).status_code == 200

    new = new_key()
    jwks.set_keys([old, new])  # Auth0 publishes the next key, then signs with it
    time.sleep(0.3)
    assert client.get(READ_URL, headers=bearer(sign(new))).status_code == 200  # unknown kid: one refetch

    jwks.set_keys([new])  # the old key is revoked
    time.sleep(1.1)  # past the cache's TTL: the next verification starts a background refresh
    client.get(READ_URL, headers=bearer(sign(old)))  # answered from the cached set, without waiting
    deadline = time.monotonic() + 10
    while client.get(READ_URL, headers=bearer(sign(old))).status_code != 401:  # once the refresh lands
        assert time.monotonic() < deadline, "the revoked key was still honoured after the refresh"
        time.sleep(0.05)
    assert client.get(READ_URL, headers=bearer(sign(new))).status_code == 200


def test_a_flood_of_random_kids_costs_the_jwks_one_request_per_interval(app: Any, jwks: JwksServer) -> None:
    verifier, cache = make_verifier(jwks, refetch_interval_s=0.5)
    install_verifier(app, verifier)
    client = app.test_client()
    key = jwks._keys[0]
    assert client.get(READ_URL, headers=bearer(sign(key))).status_code == 200
    assert jwks.requests == 1
    started = time.monotonic()
    refused = 0
    while time.monotonic() - started < 1.6:
        token = sign(key, header={"kid": secrets.token_urlsafe(12)})
        refused += verifier_refuses(verifier, token)
    elapsed = time.monotonic() - started
    assert refused > 50, "the flood was a flood"
    # One initial fetch, then at most one per 0.5 s interval, however many kids were tried.
    assert jwks.requests <= 1 + int(elapsed / 0.5) + 1, (jwks.requests, refused)
    assert cache.fetches == jwks.requests


def verifier_refuses(verifier: TokenVerifier, token: str) -> int:
    try:
        verifier.verify(token)
    except tokens.AuthError:
        return 1
    return 0


def test_the_default_refetch_interval_holds_a_flood_to_one_fetch(jwks: JwksServer) -> None:
    verifier, _ = make_verifier(jwks)  # production defaults: TTL 60 s, refetch at most every 10 s
    key = jwks._keys[0]
    verifier.verify(sign(key))
    for _ in range(300):
        assert verifier_refuses(verifier, sign(key, header={"kid": secrets.token_urlsafe(12)}))
    assert jwks.requests == 1


def test_jwks_down_at_start_is_503_and_later_the_cached_keys_still_work(app: Any, jwks: JwksServer) -> None:
    verifier, _ = make_verifier(jwks, ttl_s=0.2, refetch_interval_s=0.1)
    install_verifier(app, verifier)
    client = app.test_client()
    key = jwks._keys[0]
    jwks.failing = True
    response = client.get(READ_URL, headers=bearer(sign(key)))
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    jwks.failing = False
    time.sleep(0.15)
    assert client.get(READ_URL, headers=bearer(sign(key))).status_code == 200
    jwks.failing = True
    time.sleep(0.3)  # the cached set is stale and the refresh fails: keep using it
    assert client.get(READ_URL, headers=bearer(sign(key))).status_code == 200


# Scopes.


def test_scopes_401_403_200(auth0_app: Any, signing_key: RSAKey) -> None:
    client = auth0_app.test_client()
    reader = bearer(sign(signing_key, scope="read:schedule"))
    nobody = bearer(sign(signing_key, scope=""))
    assert client.get(READ_URL, headers=reader).status_code == 200
    forbidden = client.get(READ_URL, headers=nobody)
    assert forbidden.status_code == 403 and forbidden.get_json()["error"]["code"] == "FORBIDDEN"
    assert 'error="insufficient_scope"' in forbidden.headers["WWW-Authenticate"]
    assert 'scope="read:schedule"' in forbidden.headers["WWW-Authenticate"]
    sync = client.post(f"/api/v1/schedule/sync?date={TODAY}", headers=reader)
    assert sync.status_code == 403
    assert sync.get_json()["error"]["details"] == {"required_scope": "sync:schedule"}
    syncer = bearer(sign(signing_key, scope="sync:schedule"))
    assert client.post(f"/api/v1/schedule/sync?date={TODAY}", headers=syncer).status_code == 202


def test_auth0_permissions_claim_grants_scopes(auth0_app: Any, signing_key: RSAKey) -> None:
    token = sign(signing_key, scope=None, permissions=["read:schedule"])
    assert auth0_app.test_client().get(READ_URL, headers=bearer(token)).status_code == 200


def test_every_api_route_requires_a_scope(app: Any) -> None:
    expected = {"GET": scopes.READ_SCHEDULE, "PATCH": scopes.WRITE_PATIENTS}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        view = app.view_functions[rule.endpoint]
        scope = getattr(view, "required_scope", None)
        while scope is None and hasattr(view, "__wrapped__"):
            view = view.__wrapped__
            scope = getattr(view, "required_scope", None)
        assert scope in scopes.ALL_SCOPES, f"{rule.rule} has no require_scope"
        if "/ops/" in rule.rule:
            assert scope == scopes.OPS_BREAKER, rule.rule
        elif rule.rule.endswith("/schedule/sync"):
            assert scope == scopes.SYNC_SCHEDULE
        else:
            methods = (rule.methods or set()) - {"HEAD", "OPTIONS"}
            assert all(expected.get(m, scope) == scope for m in methods), (rule.rule, methods, scope)


def test_health_ready_and_preflight_stay_public(auth0_app: Any) -> None:
    client = auth0_app.test_client()
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code in {200, 503}  # public; 503 only because no worker runs here
    assert client.options(READ_URL).status_code == 200


# /ws: the relay's authenticator hook.


def test_the_socket_hook_uses_the_verifier(auth0_app: Any, signing_key: RSAKey) -> None:
    authenticate = auth0_app.extensions[WS_KEY]
    assert authenticate(sign(signing_key))["sub"] == "auth0|user-1"
    for bad in (None, "", ATTACKS["expired"](signing_key), ATTACKS["alg none"](signing_key)):
        with pytest.raises(SocketAuthError):
            authenticate(bad)
    with pytest.raises(SocketAuthError):
        authenticate(sign(signing_key, scope="sync:schedule"))  # cannot read any topic


def test_topic_scopes_and_expiry() -> None:
    reader = {"scope": "read:schedule", "exp": 1000}
    ops = {"permissions": ["ops:breaker"], "exp": 1000}
    assert auth.may_subscribe(reader, "schedule:2026-11-25") and auth.may_subscribe(
        reader, "patients:2026-11-25"
    )
    assert not auth.may_subscribe(reader, "ops")
    assert auth.may_subscribe(ops, "ops") and not auth.may_subscribe(ops, "schedule:2026-11-25")
    assert auth.seconds_left(reader, now=990) == 10


# Development mode and settings.


def test_dev_mode_serves_its_jwks_and_accepts_make_token(
    app: Any, base_env: dict[str, str], dev_key_path: str
) -> None:
    document = app.test_client().get("/.well-known/jwks.json").get_json()
    assert [key["alg"] for key in document["keys"]] == ["RS256"]
    assert all("d" not in key for key in document["keys"]), "only the public half is published"
    token = subprocess.run(
        [sys.executable, "-m", "app.devtoken", "--scope", "read:schedule"],
        env={**base_env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    assert app.test_client().get(READ_URL, headers=bearer(token)).status_code == 200
    assert (
        app.test_client().post(f"/api/v1/schedule/sync?date={TODAY}", headers=bearer(token)).status_code
        == 403
    )
    forged = sign(
        new_key(), iss="https://dev.clinic-relay.local/", aud=load_settings(base_env).auth0_audience
    )
    assert_401(app.test_client().get(READ_URL, headers=bearer(forged)))


def test_make_token_refuses_auth0_mode(base_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.devtoken"],
        env={**base_env, "AUTH_MODE": "auth0", "AUTH0_DOMAIN": "tenant.example", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and not result.stdout


def test_auth0_mode_derives_the_issuer_and_its_discovery_url_from_the_domain() -> None:
    settings = load_settings(
        {
            "APP_ENV": "test",
            "AUTH_MODE": "auth0",
            "AUTH0_DOMAIN": "clinic.us.auth0.com",
            "AUTH0_AUDIENCE": "x",
        }
    )
    discovery = Discovery(settings.issuer)
    verifier = tokens.verifier_from_settings(settings, discovery)
    assert verifier.issuer == "https://clinic.us.auth0.com/"
    assert verifier.audience == "x"
    assert discovery.url == "https://clinic.us.auth0.com/.well-known/openid-configuration"


# Everything production needs but the auth settings these tests vary.
PRODUCTION_SECRETS = {
    name: value for name, value in STRONG.items() if name not in {"AUTH_MODE", "AUTH0_DOMAIN"}
}


def test_production_refuses_dev_auth_mode_and_a_missing_domain() -> None:
    with pytest.raises(SettingsError, match="AUTH_MODE"):
        load_settings({**PRODUCTION_SECRETS, "AUTH_MODE": "dev", "AUTH0_DOMAIN": "tenant.example"})
    with pytest.raises(SettingsError, match="AUTH0_DOMAIN"):
        load_settings({**PRODUCTION_SECRETS, "AUTH_MODE": "auth0"})
    assert load_settings(
        {
            **PRODUCTION_SECRETS,
            "AUTH_MODE": "auth0",
            "AUTH0_DOMAIN": "tenant.example",
            "OIDC_CLIENT_ID": "board",
        }
    )


def test_a_socket_subscribes_only_to_the_topics_its_scopes_allow(api_server: str, make_token: Any) -> None:
    from websockets.sync.client import connect

    url = api_server.replace("http://", "ws://") + "/ws"
    reader = {"Authorization": f"Bearer {make_token(scopes=['read:schedule'])}"}
    with connect(url, open_timeout=5, additional_headers=reader) as ws:
        ws.send(json.dumps({"type": "subscribe", "topics": ["ops"]}))
        refused = json.loads(ws.recv(timeout=5))
        assert refused["type"] == "error" and refused["error"]["code"] == "FORBIDDEN", refused
        ws.send(json.dumps({"type": "subscribe", "topics": [f"schedule:{TODAY}"]}))
        assert json.loads(ws.recv(timeout=5))["type"] == "subscribed"
    forged = {"Authorization": f"Bearer {sign(new_key())}"}
    with pytest.raises(Exception, match="401"):
        connect(url, open_timeout=5, additional_headers=forged)
