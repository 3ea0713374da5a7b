"""The development signing key: lets `make run` and the tests work without an Auth0 tenant.

In ``AUTH_MODE=dev`` the API trusts tokens signed by one local RS256 key, kept as a PKCS#8 PEM at
``DEV_KEY_PATH`` (default ``var/dev-signing-key.pem``; ``var/`` is git-ignored). The key is generated on first
use, written with mode 0600 and published atomically (several processes may start at once: the first link
wins, the others read it). Its public half is served at ``/.well-known/jwks.json`` and ``make token``
(``python -m app.devtoken``) signs with it. Production refuses dev mode (``Settings.validate``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from joserfc.jwk import RSAKey

DEV_ISSUER = "https://dev.clinic-relay.local/"
KEY_BITS = 2048


def load_or_create(path: str | os.PathLike[str]) -> RSAKey:
    """The key at ``path``, generated (and written, 0600) if there is none yet; its kid is its thumbprint."""
    target = Path(path)
    if not target.exists():
        _create(target)
    key = RSAKey.import_key(target.read_bytes())
    # RFC 7638 thumbprint as kid: stable across processes and restarts, changes when the file is replaced.
    return RSAKey.import_key(key.as_dict(private=True), {"kid": key.thumbprint()})


def _create(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    pem = RSAKey.generate_key(KEY_BITS).as_pem(private=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".dev-key-")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
        os.close(fd)
        with contextlib.suppress(FileExistsError):  # another process got there first: keep theirs
            os.link(tmp, target)
    finally:
        os.unlink(tmp)


def public_jwks(key: RSAKey) -> dict[str, Any]:
    """The JWKS document of the key's public half."""
    public = key.as_dict(private=False)
    return {"keys": [{**public, "use": "sig", "alg": "RS256"}]}
