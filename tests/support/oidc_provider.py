"""A real OpenID provider for the sign-in tests: panva's oidc-provider (npm) run by Node on loopback.

tests/oidc_provider/ holds its package.json, package-lock.json and provider.mjs; ``npm ci`` installs the
locked version there the first time (or when the lock changed), so a fresh machine needs only Node and npm
(``apt-get install nodejs npm``; .ci/run does it). Without them the tests that need the provider skip,
saying so.

    with start_provider(board="http://127.0.0.1:8123", log=path) as provider:
        provider.issuer          # http://127.0.0.1:<port>
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.processes import ROOT, free_port, spawn, stop, wait_until

PROVIDER_DIR = ROOT / "tests" / "oidc_provider"
AUDIENCE = "https://clinic-relay.test/api"
OTHER_AUDIENCE = "https://other-resource.test/api"  # the provider mints these tokens for another audience
ROLE_CLAIM = "https://clinic-relay.test/roles"
CLIENT_ID = "relay-board"
SHORT_CLIENT_ID = "relay-board-short-session"  # its refresh tokens last 1 s: an expired session
NO_REFRESH_CLIENT_ID = "relay-board-no-refresh"  # gets no refresh token: renewal by prompt=none
NPM_TIMEOUT_S = 300


@dataclass(frozen=True)
class Provider:
    issuer: str
    audience: str = AUDIENCE
    other_audience: str = OTHER_AUDIENCE
    role_claim: str = ROLE_CLAIM
    client_id: str = CLIENT_ID
    short_client_id: str = SHORT_CLIENT_ID
    no_refresh_client_id: str = NO_REFRESH_CLIENT_ID


def missing_tools() -> str | None:
    """Why the provider cannot run here (no node or npm), or None."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install -y nodejs npm; .ci/run does it)"
    return None


def install() -> None:
    """``npm ci`` in tests/oidc_provider unless node_modules already matches the lock file."""
    lock = PROVIDER_DIR / "package-lock.json"
    installed = PROVIDER_DIR / "node_modules" / ".package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=PROVIDER_DIR,
        check=True,
        timeout=NPM_TIMEOUT_S,
        capture_output=True,
    )


@contextmanager
def start_provider(*, board: str, log: Path, access_ttl_s: int = 20) -> Iterator[Provider]:
    """The provider on a free port, trusting the board at ``board`` (its origin) as a public client."""
    install()
    port = free_port()
    provider = Provider(issuer=f"http://127.0.0.1:{port}")
    options = {
        "port": port,
        "board": board,
        "audience": provider.audience,
        "other_audience": provider.other_audience,
        "access_ttl_s": access_ttl_s,
        "role_claim": provider.role_claim,
        "client_id": provider.client_id,
        "short_client_id": provider.short_client_id,
        "no_refresh_client_id": provider.no_refresh_client_id,
    }
    proc = spawn(["node", str(PROVIDER_DIR / "provider.mjs"), json.dumps(options)], {}, log)
    discovery = f"{provider.issuer}/.well-known/openid-configuration"
    try:
        wait_until(lambda: requests.get(discovery, timeout=1).ok, 30, "oidc-provider", proc, log)
        yield provider
    finally:
        stop(proc)
