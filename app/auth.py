"""Who is calling: RS256 bearer tokens verified against the identity provider's keys, scopes per route.

Every request under ``/api/`` must carry ``Authorization: Bearer <token>``; /health, /ready and the
development JWKS stay public. A token is accepted only if:
  - its header says ``alg: RS256`` (the allow-list: ``none``, HS256 signed with the public key and every
    other algorithm are refused before any key is looked at) and names a ``kid`` the key set holds;
  - its signature verifies under that key;
  - ``iss`` is ``https://{AUTH0_DOMAIN}/`` (dev: :data:`app.devkey.DEV_ISSUER`), ``aud`` holds AUTH0_AUDIENCE,
    ``exp`` is present and not past, ``nbf``/``iat`` not in the future, each with LEEWAY_S of clock skew;
  - it has a ``sub``.
The verified claims are on ``flask.g.claims`` (:func:`current_claims`). Scopes come from the ``scope``
claim (space-separated) and the ``permissions`` claim (Auth0 RBAC), united. A missing or bad token is 401
``UNAUTHORIZED``; a good token without the route's scope is 403 ``FORBIDDEN``; both carry
``WWW-Authenticate: Bearer …`` as RFC 6750 §3 describes.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Flask, Response, current_app, g, jsonify, request
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey
from joserfc.jwt import JWTClaimsRegistry

from app import devkey
from app.discovery import Discovery
from app.errors import ApiError
from app.jwks import JwksCache, JwksUnavailable
from app.realtime.access import EXTENSION_KEY as WS_AUTHENTICATOR_KEY
from app.realtime.access import TOPIC_EXTENSION_KEY as WS_TOPIC_AUTHORIZER_KEY
from app.realtime.access import SocketAuthError
from config import Settings
from config.settings import SIGN_IN_MODES
from tasks.events import topic_family

log = logging.getLogger(__name__)

EXTENSION_KEY = "auth_verifier"
DISCOVERY_KEY = "oidc_discovery"  # the issuer's Discovery (oidc, auth0 modes) or None (dev)
REALM = "clinic-relay"
ALGORITHMS = ("RS256",)
LEEWAY_S = 30  # clock skew between Auth0, the browser and this host
MAX_TOKEN_BYTES = 8192  # Auth0 access tokens are ~1 kB; a huge one is an attack on the parser, not a token

READ_SCHEDULE = "read:schedule"
SYNC_SCHEDULE = "sync:schedule"
WRITE_PATIENTS = "write:patients"
OPS_BREAKER = "ops:breaker"
ALL_SCOPES = (READ_SCHEDULE, SYNC_SCHEDULE, WRITE_PATIENTS, OPS_BREAKER)
SCOPES_KEY = "_scopes"  # derived entries of verified claims (TokenVerifier)
ROLES_KEY = "_roles"

Claims = dict[str, Any]
KeyLookup = Callable[[str], KeySet | None]
View = TypeVar("View", bound=Callable[..., Any])


class AuthError(Exception):
    """A request (or socket) that did not prove who it is. ``error`` is RFC 6750's error code."""

    def __init__(self, description: str, error: str | None = "invalid_token") -> None:
        super().__init__(description)
        self.description = description
        self.error = error


class Roles:
    """The provider's roles mapped to our scopes: ``claim`` names the roles, ``table`` says what each may do.

    ``claim`` is looked up as a top-level claim first (Auth0's namespaced ``https://…/roles`` has dots in
    it), then as a dotted path into nested objects (Keycloak's ``realm_access.roles``). Its value is a list
    of role names or one name. Unknown roles grant nothing.
    """

    def __init__(self, claim: str = "roles", table: dict[str, tuple[str, ...]] | None = None) -> None:
        self.claim = claim
        self.table = dict(table or {})
        unknown = {scope for scopes in self.table.values() for scope in scopes} - set(ALL_SCOPES)
        if unknown:
            raise ValueError(f"OIDC_ROLE_SCOPES names unknown scopes: {', '.join(sorted(unknown))}")

    def of(self, claims: Claims) -> list[str]:
        """The role names the claims carry (strings only, in their order)."""
        value: Any = claims.get(self.claim)
        if value is None and "." in self.claim:
            value = claims
            for part in self.claim.split("."):
                value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str):
            value = [value]
        return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []

    def scopes(self, roles: list[str]) -> set[str]:
        return {scope for role in roles for scope in self.table.get(role, ())}


class TokenVerifier:
    """Verifies access tokens of one issuer and audience against the keys ``keys_for(kid)`` returns.

    The claims it returns carry two derived entries, always set here (never taken from the token):
    ``_roles`` (the role names) and ``_scopes`` (every scope granted: ``scope``, ``permissions`` and the
    roles' scopes, united).
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        keys_for: KeyLookup,
        leeway_s: int = LEEWAY_S,
        roles: Roles | None = None,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.roles = roles or Roles()
        self._keys_for = keys_for
        self._verified = VerifiedTokens()
        self._registry = JWTClaimsRegistry(
            leeway=leeway_s,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            sub={"essential": True},
        )

    def verify(self, token: str) -> Claims:
        """The token's claims, or :class:`AuthError`; :class:`JwksUnavailable` when no keys can be had."""
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError("The token is too large.")
        cached = self._verified.get(token)
        if cached is not None:
            return cached
        claims = self._verify(token)
        self._verified.put(token, claims)
        return claims

    def _verify(self, token: str) -> Claims:
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError):
            raise AuthError("The token is not a signed JWT.") from None
        if header.get("alg") not in ALGORITHMS:
            raise AuthError("The token's algorithm is not allowed.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("The token names no signing key.")
        keys = self._keys_for(kid)
        if keys is None:
            raise AuthError("The token's signing key is not known.")
        try:
            decoded = jwt.decode(token, keys, algorithms=list(ALGORITHMS))
            self._registry.validate(decoded.claims)
        except JoseError as exc:
            raise AuthError(_describe(exc)) from None
        if not isinstance(decoded.claims.get("sub"), str):
            raise AuthError("The token has no subject.")
        claims = dict(decoded.claims)
        roles = self.roles.of(claims)
        claims[ROLES_KEY] = roles
        claims[SCOPES_KEY] = sorted(_token_scopes(claims) | self.roles.scopes(roles))
        return claims


class VerifiedTokens:
    """Tokens that verified, for a short while: a dashboard sends the same token with every request, and an
    RS256 check costs more than the rest of a cached read.

    Entries live until the token's ``exp`` and never longer than ``ttl_s`` (60 s, the JWKS cache's age: a key
    removed from the JWKS stops being honoured as soon as it would without this cache). Keyed by a digest of
    the token; only successes are kept; bounded in size.
    """

    def __init__(self, ttl_s: float = 60.0, max_entries: int = 4096) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: dict[bytes, tuple[float, Claims]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> Claims | None:
        key = hashlib.sha256(token.encode()).digest()
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            if found[0] <= time.time():
                del self._entries[key]
                return None
            return dict(found[1])

    def put(self, token: str, claims: Claims) -> None:
        until = min(time.time() + self._ttl_s, float(claims.get("exp", 0)))
        key = hashlib.sha256(token.encode()).digest()
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.pop(next(iter(self._entries)))  # the oldest insertion
            self._entries[key] = (until, dict(claims))


def _describe(exc: JoseError) -> str:
    # Fixed phrases only: the client learns which check failed, never anything echoed back from the token.
    return {
        "expired_token": "The token has expired.",
        "invalid_claim": "The token's issuer, audience or validity window is not accepted.",
        "missing_claim": "The token lacks a required claim.",
        "bad_signature": "The token's signature does not verify.",
    }.get(exc.error, "The token is not valid.")


def verifier_from_settings(settings: Settings, discovery: Discovery | None = None) -> TokenVerifier:
    """oidc/auth0 modes: keys from the discovery document's jwks_uri. Dev mode: the key at DEV_KEY_PATH."""
    roles = Roles(settings.oidc_role_claim, settings.role_scopes)
    if settings.auth_mode in SIGN_IN_MODES:
        found = discovery or Discovery(settings.issuer, ttl_s=settings.oidc_discovery_ttl_s)
        cache = JwksCache(lambda: found.metadata().jwks_uri)
        return TokenVerifier(
            issuer=settings.issuer, audience=settings.audience, keys_for=cache.keys_for, roles=roles
        )
    if settings.auth_mode == "dev":
        return dev_verifier(devkey.load_or_create(settings.dev_key_path), settings.audience, roles)
    raise ValueError(f"AUTH_MODE must be dev, oidc or auth0, not {settings.auth_mode!r}")


def dev_verifier(key: RSAKey, audience: str, roles: Roles | None = None) -> TokenVerifier:
    """A verifier that trusts only the development key (no HTTP: the API is its own JWKS)."""
    keys = KeySet.import_key_set(devkey.public_jwks(key))  # type: ignore[arg-type]
    kid = key.kid
    return TokenVerifier(
        issuer=devkey.DEV_ISSUER,
        audience=audience,
        keys_for=lambda asked: keys if asked == kid else None,
        roles=roles,
    )


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None if absent; AuthError if malformed."""
    if header is None or not header.strip():
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthError("Send the token as: Authorization: Bearer <token>.", error="invalid_request")
    return token


def scopes_of(claims: Claims) -> frozenset[str]:
    """The scopes granted: what the verifier derived (token scopes and roles), else the token's own."""
    derived = claims.get(SCOPES_KEY)
    if isinstance(derived, list):
        return frozenset(derived)
    return frozenset(_token_scopes(claims))


def roles_of(claims: Claims) -> list[str]:
    """The role names the verifier found in the token (empty for a token without roles)."""
    found = claims.get(ROLES_KEY)
    return list(found) if isinstance(found, list) else []


def _token_scopes(claims: Claims) -> set[str]:
    """The token's own scopes: the ``scope`` string and Auth0's ``permissions`` list, united."""
    granted: set[str] = set()
    scope = claims.get("scope")
    if isinstance(scope, str):
        granted.update(scope.split())
    permissions = claims.get("permissions")
    if isinstance(permissions, list):
        granted.update(item for item in permissions if isinstance(item, str))
    return granted


def verifier(app: Flask | None = None) -> TokenVerifier:
    found: TokenVerifier = (app or current_app).extensions[EXTENSION_KEY]
    return found


# The request's identity: verified once, kept on ``g``.


def authenticate_request() -> Claims | None:
    """The verified claims of this request's token (None, with ``g.auth_error`` set, if it has none valid)."""
    if "auth_checked" in g:
        return cast(Claims | None, g.get("claims"))
    g.auth_checked = True
    g.claims = None
    g.auth_error = None
    try:
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            raise AuthError("A bearer token is required.", error=None)
        g.claims = verifier().verify(token)
    except AuthError as exc:
        g.auth_error = exc
    except JwksUnavailable:
        log.error("jwks unavailable: cannot verify tokens")
        raise ApiError(
            "SERVICE_UNAVAILABLE",
            "The identity provider's keys are unavailable; try again shortly.",
            headers={"Retry-After": "5"},
        ) from None
    return cast(Claims | None, g.claims)


def current_claims() -> Claims:
    """The verified claims of this request (401 if there are none)."""
    claims = authenticate_request()
    if claims is None:
        raise _unauthorized(g.auth_error)
    return claims


def subject() -> str | None:
    """The verified ``sub`` of this request, or None."""
    claims = authenticate_request()
    return None if claims is None else str(claims["sub"])


def _unauthorized(exc: AuthError) -> ApiError:
    challenge = f'Bearer realm="{REALM}"'
    if exc.error:
        challenge += f', error="{exc.error}", error_description="{exc.description}"'
    return ApiError("UNAUTHORIZED", exc.description, headers={"WWW-Authenticate": challenge})


def require_scope(scope: str) -> Callable[[View], View]:
    """Run the view only for a verified token holding ``scope`` (401 without a token, 403 without scope)."""
    if scope not in ALL_SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            claims = current_claims()
            if scope not in scopes_of(claims):
                challenge = (
                    f'Bearer realm="{REALM}", error="insufficient_scope", '
                    f'error_description="This needs the {scope} scope.", scope="{scope}"'
                )
                raise ApiError(
                    "FORBIDDEN",
                    f"This needs the {scope} scope.",
                    details={"required_scope": scope},
                    headers={"WWW-Authenticate": challenge},
                )
            return view(*args, **kwargs)

        guarded.required_scope = scope  # type: ignore[attr-defined]  # a test checks every /api route has one
        return cast(View, guarded)

    return decorate


def _refuse_unauthenticated_api() -> None:
    # Deny by default: a route under /api/ that forgot its require_scope still needs a valid token.
    if request.path.startswith("/api/") and request.method != "OPTIONS":
        current_claims()


# /ws: the relay calls the installed authenticator with the token (or None).


def socket_authenticator(token_verifier: TokenVerifier) -> Callable[[str | None], Claims]:
    """The ``ws_authenticator`` hook: token -> claims, or SocketAuthError (missing, invalid, no scope)."""

    def authenticate(token: str | None) -> Claims:
        if not token:
            raise SocketAuthError("A bearer token is required.")
        try:
            claims = token_verifier.verify(token)
        except AuthError as exc:
            raise SocketAuthError(exc.description) from None
        except JwksUnavailable:
            raise SocketAuthError("The identity provider's keys are unavailable.") from None
        if not scopes_of(claims) & {READ_SCHEDULE, OPS_BREAKER}:
            raise SocketAuthError("The token grants no scope that reads events.")
        return claims

    return authenticate


def topic_scope(topic: str) -> str | None:
    """The scope a socket needs for ``topic``, from the topic table (tasks/events.py); None for no topic."""
    family = topic_family(topic)
    return None if family is None else family.scope


def may_subscribe(claims: Claims, topic: str) -> bool:
    """Whether a socket with ``claims`` may receive ``topic``'s events."""
    scope = topic_scope(topic)
    return scope is not None and scope in scopes_of(claims)


def seconds_left(claims: Claims, now: float | None = None) -> float:
    """How long until the token expires (the relay closes the socket then, code 4401)."""
    return float(claims["exp"]) - (time.time() if now is None else now)


# Wiring.


def init_app(app: Flask, settings: Settings, token_verifier: TokenVerifier | None = None) -> None:
    """Install the verifier (from settings unless given), the /api guard, the /ws hook and the dev JWKS."""
    discovery = None
    if settings.auth_mode in SIGN_IN_MODES:  # one document for the verifier's keys and the board's sign-in
        discovery = Discovery(settings.issuer, ttl_s=settings.oidc_discovery_ttl_s)
    app.extensions[DISCOVERY_KEY] = discovery
    chosen = token_verifier or verifier_from_settings(settings, discovery)
    app.extensions[EXTENSION_KEY] = chosen
    app.extensions[WS_AUTHENTICATOR_KEY] = socket_authenticator(chosen)
    app.extensions[WS_TOPIC_AUTHORIZER_KEY] = may_subscribe  # the relay asks it for each subscribed topic
    app.before_request(_refuse_unauthenticated_api)
    if settings.auth_mode == "dev":
        _serve_dev_jwks(app, settings)


def install_verifier(app: Flask, token_verifier: TokenVerifier) -> None:
    """Swap the verifier (and the /ws hook with it) on a built app: tests point it at a local JWKS server."""
    app.extensions[EXTENSION_KEY] = token_verifier
    app.extensions[WS_AUTHENTICATOR_KEY] = socket_authenticator(token_verifier)


def _serve_dev_jwks(app: Flask, settings: Settings) -> None:
    document = devkey.public_jwks(devkey.load_or_create(settings.dev_key_path))

    def dev_jwks() -> Response:
        return jsonify(document)

    app.add_url_rule("/.well-known/jwks.json", "dev_jwks", dev_jwks, methods=["GET"])
