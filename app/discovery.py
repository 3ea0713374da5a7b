"""The identity provider's OpenID discovery document, fetched with timeouts, checked and cached.

Everything the API and the board need besides the issuer (authorization, token, JWKS and end-session
endpoints) comes from ``{issuer}/.well-known/openid-configuration``, never from paths built here: providers
differ (Auth0 ``/authorize``, others ``/auth`` or ``/oauth2/v1/authorize``). The document's ``issuer`` must
equal the configured one exactly (OpenID Connect Discovery §4.3), or it is refused: a look-alike document
cannot redirect sign-ins or keys elsewhere.

The document is kept ``ttl_s`` (an hour); after that the next reader starts one background refresh and keeps
using the cached document meanwhile, so no request waits on the provider once a document is held. Only the
first fetch (nothing cached yet) is waited for; its failure is :class:`DiscoveryUnavailable`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.05
READ_TIMEOUT_S = 5.0
MAX_DOCUMENT_BYTES = 64 * 1024  # discovery documents and JWKS are a few kB
RETRY_INTERVAL_S = 10.0  # a failing provider is asked again at most this often
WELL_KNOWN = "/.well-known/openid-configuration"


class DiscoveryUnavailable(Exception):
    """No discovery document could be fetched (or it failed its checks) and none is cached."""


def fetch_json(session: requests.Session, url: str) -> Any:
    """GET ``url`` as JSON with both timeouts, no redirects, at most MAX_DOCUMENT_BYTES; raises on failure."""
    response = session.get(url, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S), allow_redirects=False)
    response.raise_for_status()
    if len(response.content) > MAX_DOCUMENT_BYTES:
        raise ValueError("document too large")
    return response.json()


@dataclass(frozen=True)
class ProviderMetadata:
    """What the API and the board use of a discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None  # Auth0 lists it once "RP-initiated logout" is on; some have none

    @classmethod
    def from_document(cls, issuer: str, document: Any) -> ProviderMetadata:
        """Check and keep the fields we use; ValueError names what is wrong."""
        if not isinstance(document, dict):
            raise ValueError("the discovery document is not a JSON object")
        if document.get("issuer") != issuer:
            raise ValueError("the discovery document names another issuer")
        methods = document.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise ValueError("the provider does not offer PKCE S256")
        urls = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri", "end_session_endpoint"):
            value = document.get(name)
            if value is None and name == "end_session_endpoint":
                continue
            if not isinstance(value, str) or not value.startswith(("https://", "http://")):
                raise ValueError(f"the discovery document has no usable {name}")
            urls[name] = value
        return cls(
            issuer=issuer,
            authorization_endpoint=urls["authorization_endpoint"],
            token_endpoint=urls["token_endpoint"],
            jwks_uri=urls["jwks_uri"],
            end_session_endpoint=urls.get("end_session_endpoint"),
        )


class Discovery:
    """One issuer's metadata, fetched on first use and refreshed in the background every ``ttl_s``."""

    def __init__(
        self, issuer: str, *, ttl_s: float = 3600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.issuer = issuer
        self.url = issuer.rstrip("/") + WELL_KNOWN
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._first = threading.Lock()  # serialises the first fetch only (nothing cached to serve meanwhile)
        self._metadata: ProviderMetadata | None = None
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._refreshing = False
        self._session = requests.Session()
        self.fetches = 0

    def metadata(self) -> ProviderMetadata:
        """The cached metadata (refreshed in the background when old); DiscoveryUnavailable if none."""
        with self._lock:
            held = self._metadata
            now = self._clock()
            stale = held is not None and now - self._fetched_at >= self.ttl_s
            if stale and self._may_start_locked(now):
                threading.Thread(target=self._refresh, name="oidc-discovery", daemon=True).start()
        if held is not None:
            return held
        with self._first:  # nothing cached: wait for one fetch, made by whoever comes first
            with self._lock:
                start = self._metadata is None and self._may_start_locked(self._clock())
            if start:
                self._refresh()
        with self._lock:
            if self._metadata is None:
                raise DiscoveryUnavailable(self.url)
            return self._metadata

    def _may_start_locked(self, now: float) -> bool:
        if self._refreshing or now - self._attempted_at < RETRY_INTERVAL_S:
            return False
        self._refreshing = True
        self._attempted_at = now
        return True

    def _refresh(self) -> None:
        try:
            self.fetches += 1
            metadata = ProviderMetadata.from_document(self.issuer, fetch_json(self._session, self.url))
        except (requests.RequestException, ValueError) as exc:
            log.warning("oidc discovery failed (%s: %s); keeping what is cached", type(exc).__name__, exc)
            metadata = None
        with self._lock:
            self._refreshing = False
            if metadata is not None:
                self._metadata = metadata
                self._fetched_at = self._clock()
