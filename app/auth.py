"""Who is calling: each request's and socket's bearer token verified (app/tokens.py), scopes per route.

Every request under ``/api/`` must carry ``Authorization: Bearer <token>``; /health, /ready and the
development JWKS stay public. A token is accepted only if it verifies (app/tokens.py says what that
checks: RS256 only, the key's ``kid``, the signature, ``iss`` ``https://{AUTH0_DOMAIN}/`` or
:data:`app.devkey.DEV_ISSUER` in dev, ``aud``, ``exp``, ``nbf``/``iat``, a ``sub``).
The verified claims are on ``flask.g.claims`` (:func:`current_claims`). Scopes come from the ``scope``
claim (space-separated) and the ``permissions`` claim (Auth0 RBAC), united with the roles' (app/scopes.py).
A missing or bad token is 401 ``UNAUTHORIZED``; a good token without the route's scope is 403
``FORBIDDEN``; both carry ``WWW-Authenticate: Bearer …`` as RFC 6750 §3 describes.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Flask, Response, current_app, g, jsonify, request

from app import devkey
from app.discovery import Discovery
from app.errors import ApiError
from app.jwks import JwksUnavailable
from app.realtime.access import EXTENSION_KEY as WS_AUTHENTICATOR_KEY
from app.realtime.access import TOPIC_EXTENSION_KEY as WS_TOPIC_AUTHORIZER_KEY
from app.realtime.access import SocketAuthError
from app.scopes import ALL_SCOPES, OPS_BREAKER, READ_SCHEDULE, Claims, scopes_of
from app.tokens import AuthError, TokenVerifier, bearer_token, verifier_from_settings
from config import Settings
from config.parsing import SIGN_IN_MODES
from tasks.events import topic_family

log = logging.getLogger(__name__)

EXTENSION_KEY = "auth_verifier"
DISCOVERY_KEY = "oidc_discovery"  # the issuer's Discovery (oidc, auth0 modes) or None (dev)
REALM = "clinic-relay"

View = TypeVar("View", bound=Callable[..., Any])


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
