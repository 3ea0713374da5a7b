"""Access tokens verified: RS256 against the identity provider's keys (or the development key), with their
issuer, audience, validity window and subject checked, and the scopes they grant derived.

A token is accepted only if its header says ``alg: RS256`` (the allow-list: ``none``, HS256 signed with the
public key and every other algorithm are refused before any key is looked at) and names a ``kid`` the key
set holds; its signature verifies under that key; ``iss``, ``aud``, ``exp`` (present, not past), ``nbf`` and
``iat`` (not in the future) pass, each with LEEWAY_S of clock skew; and it has a ``sub``. app/auth.py applies
the verifier to requests and sockets.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey
from joserfc.jwt import JWTClaimsRegistry

from app import devkey
from app.discovery import Discovery
from app.jwks import JwksCache
from app.scopes import ROLES_KEY, SCOPES_KEY, Claims, Roles, token_scopes
from config import Settings
from config.parsing import SIGN_IN_MODES

ALGORITHMS = ("RS256",)
LEEWAY_S = 30  # clock skew between Auth0, the browser and this host
MAX_TOKEN_BYTES = 8192  # Auth0 access tokens are ~1 kB; a huge one is an attack on the parser, not a token

KeyLookup = Callable[[str], KeySet | None]


class AuthError(Exception):
    """A request (or socket) that did not prove who it is. ``error`` is RFC 6750's error code."""

    def __init__(self, description: str, error: str | None = "invalid_token") -> None:
        super().__init__(description)
        self.description = description
        self.error = error


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
        claims[SCOPES_KEY] = sorted(token_scopes(claims) | self.roles.scopes(roles))
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
