"""Print a development bearer token: ``python -m app.devtoken`` (``make token``).

Signed with the development key at DEV_KEY_PATH (created if missing), issuer :data:`app.devkey.DEV_ISSUER`,
audience AUTH0_AUDIENCE, every scope unless ``--scope`` narrows it. Refuses outside ``AUTH_MODE=dev``: a
token an Auth0-mode API would reject is no help, and production never has a dev key to sign with.

    curl -H "Authorization: Bearer $(make -s token)" localhost:8000/api/v1/providers
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from joserfc import jwt
from joserfc.jwk import RSAKey

from app import devkey
from app.scopes import ALL_SCOPES
from config import load_settings

DEFAULT_TTL_S = 8 * 3600  # one clinic day
DEFAULT_SUBJECT = "dev|local-user"


def mint(
    key: RSAKey,
    *,
    audience: str,
    scopes: Sequence[str] = ALL_SCOPES,
    subject: str = DEFAULT_SUBJECT,
    ttl_s: int = DEFAULT_TTL_S,
    issuer: str = devkey.DEV_ISSUER,
    now: int | None = None,
) -> str:
    """A signed RS256 access token shaped like Auth0's (``scope`` string and ``permissions`` list)."""
    issued = int(time.time()) if now is None else now
    claims = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_s,
        "scope": " ".join(scopes),
        "permissions": list(scopes),
    }
    return jwt.encode({"alg": "RS256", "typ": "JWT", "kid": key.kid}, claims, key, algorithms=["RS256"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.devtoken", description=__doc__.splitlines()[0])
    parser.add_argument("--scope", action="append", choices=ALL_SCOPES, help="repeat; default: all")
    parser.add_argument("--sub", default=DEFAULT_SUBJECT)
    parser.add_argument("--ttl", type=int, default=DEFAULT_TTL_S, help="seconds (default: 8 h)")
    args = parser.parse_args(argv)
    settings = load_settings()
    if settings.auth_mode != "dev":
        print("make token works only with AUTH_MODE=dev (tokens come from Auth0 otherwise)", file=sys.stderr)
        return 2
    key = devkey.load_or_create(settings.dev_key_path)
    token = mint(
        key,
        audience=settings.auth0_audience,
        scopes=args.scope or ALL_SCOPES,
        subject=args.sub,
        ttl_s=args.ttl,
    )
    print(token)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
