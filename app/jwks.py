"""The identity provider's signing keys (JWKS), fetched over HTTPS and cached.

The key set's URL is the discovery document's ``jwks_uri`` (app/discovery.py), or a fixed URL. A key set
is kept for ``ttl_s`` (60 s). No lock is held while the provider is asked, and a verification whose ``kid``
is in the cached set never waits for it:

- cached set past its TTL, kid in it: the cached set answers at once and one background thread refreshes it;
- kid not in the cached set (the provider rotated its key), or no set yet: the caller waits for a fetch
  (its own, or the one already in flight), since it has nothing to verify with meanwhile.

Every fetch, background or not, waits out ``refetch_interval_s`` since the last one: a flood of tokens
with random kids costs the provider one request per interval, not one per token. When a fetch fails the last
good set is kept (a short outage does not sign everyone out); with no set at all :class:`JwksUnavailable` is
raised and the API answers 503.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import requests
from joserfc.jwk import KeySet

from app.discovery import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, DiscoveryUnavailable, fetch_json

log = logging.getLogger(__name__)

WAIT_FOR_FETCH_S = CONNECT_TIMEOUT_S + READ_TIMEOUT_S + 1.0  # a fetch in flight ends by then (its timeouts)


class JwksUnavailable(Exception):
    """No key set could be fetched and none is cached."""


class JwksCache:
    """A JWKS URL's key set, cached ``ttl_s``; refreshed without blocking holders of a cached kid."""

    def __init__(
        self,
        url: str | Callable[[], str],
        *,
        ttl_s: float = 60.0,
        refetch_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url  # a callable is asked at each fetch (the discovery document's jwks_uri)
        self.ttl_s = ttl_s
        self.refetch_interval_s = refetch_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._fetched = threading.Condition(self._lock)  # notified when a fetch ends, well or not
        self._keys: KeySet | None = None
        self._kids: frozenset[str] = frozenset()
        self._fetched_at = float("-inf")  # when the cached set was last fetched successfully
        self._attempted_at = float("-inf")  # when any fetch was last started (success or not)
        self._in_flight = False
        self._session = requests.Session()
        self.fetches = 0  # how many fetches were started (tests and metrics read it)

    @property
    def url(self) -> str:
        return self._url if isinstance(self._url, str) else self._url()

    def keys_for(self, kid: str) -> KeySet | None:
        """The current key set if it holds ``kid``; None: unknown even after an allowed refetch."""
        with self._lock:
            now = self._clock()
            if self._keys is not None and kid in self._kids:
                if now - self._fetched_at >= self.ttl_s and self._may_start_locked(now):
                    threading.Thread(target=self._fetch, name="jwks-refresh", daemon=True).start()
                return self._keys
            mine = self._may_start_locked(now)
            if not mine and self._in_flight:  # another thread is fetching: its answer is ours too
                self._fetched.wait_for(lambda: not self._in_flight, timeout=WAIT_FOR_FETCH_S)
        if mine:
            self._fetch()
        with self._lock:
            if self._keys is None:
                raise JwksUnavailable("no signing keys")
            return self._keys if kid in self._kids else None

    def _may_start_locked(self, now: float) -> bool:
        if self._in_flight or now - self._attempted_at < self.refetch_interval_s:
            return False
        self._in_flight = True
        self._attempted_at = now
        self.fetches += 1
        return True

    def _fetch(self) -> None:
        keys = None
        try:
            document = fetch_json(self._session, self.url)
            public = [key for key in document["keys"] if key.get("kty") == "RSA" and "kid" in key]
            keys = KeySet.import_key_set({"keys": public})
        except (requests.RequestException, DiscoveryUnavailable, ValueError, KeyError, TypeError) as exc:
            log.warning("jwks fetch failed (%s); keeping the cached set", type(exc).__name__)
        with self._lock:
            self._in_flight = False
            if keys is not None:
                self._keys = keys
                self._kids = frozenset(str(key["kid"]) for key in public)
                self._fetched_at = self._clock()
            self._fetched.notify_all()
