"""The identity provider's signing keys (JWKS), fetched over HTTPS and cached.

Auth0 publishes its public keys at ``https://{AUTH0_DOMAIN}/.well-known/jwks.json``. A key set is kept for
``ttl_s`` (60 s). A token naming a ``kid`` that is not in the cached set may trigger one early refetch (Auth0
rotated its key), but at most one per ``refetch_interval_s`` across all threads: a flood of tokens with
random kids costs Auth0 one request per interval, not one per token. When a fetch fails the last good set
is kept (a short Auth0 outage does not log everyone out); with no set at all :class:`JwksUnavailable` is
raised and the API answers 503.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import requests
from joserfc.jwk import KeySet

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.05
READ_TIMEOUT_S = 5.0
MAX_JWKS_BYTES = 64 * 1024  # Auth0's set holds two or three keys; anything far larger is not a JWKS


class JwksUnavailable(Exception):
    """No key set could be fetched and none is cached."""


class JwksCache:
    """A JWKS URL's key set, cached ``ttl_s``; an unknown kid refetches early, at most once per interval."""

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float = 60.0,
        refetch_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.refetch_interval_s = refetch_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._kids: frozenset[str] = frozenset()
        self._fetched_at = float("-inf")  # when the cached set was last fetched successfully
        self._attempted_at = float("-inf")  # when any fetch was last tried (success or not)
        self._session = requests.Session()
        self.fetches = 0  # how many HTTP requests were made (tests and metrics read it)

    def keys_for(self, kid: str) -> KeySet | None:
        """The current key set if it holds ``kid`` (refetching if stale or, rate-limited, if kid is unknown).

        None: the kid is unknown even after the refetch this call was allowed.
        """
        with self._lock:
            now = self._clock()
            if self._keys is None or now - self._fetched_at >= self.ttl_s or kid not in self._kids:
                self._fetch_locked(now)
            if self._keys is None:
                raise JwksUnavailable(self.url)
            return self._keys if kid in self._kids else None

    def _fetch_locked(self, now: float) -> None:
        # Every fetch (first, stale, unknown kid, after a failure) waits out the interval since the last try:
        # neither random kids nor a failing Auth0 turn requests into a stream of fetches.
        if now - self._attempted_at < self.refetch_interval_s:
            return
        self._attempted_at = now
        self.fetches += 1
        try:
            response = self._session.get(
                self.url, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S), allow_redirects=False
            )
            response.raise_for_status()
            if len(response.content) > MAX_JWKS_BYTES:
                raise ValueError("JWKS document too large")
            document = response.json()
            public = [key for key in document["keys"] if key.get("kty") == "RSA" and "kid" in key]
            keys = KeySet.import_key_set({"keys": public})
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            log.warning("jwks fetch failed (%s); keeping the cached set", type(exc).__name__)
            return
        self._keys = keys
        self._kids = frozenset(str(key["kid"]) for key in public)
        self._fetched_at = now
