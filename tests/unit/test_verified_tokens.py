"""The short-lived cache of verified tokens never outlives the token or the JWKS cache's age."""

from __future__ import annotations

import time

from app.tokens import VerifiedTokens


def test_a_verified_token_is_served_from_the_cache_until_it_expires() -> None:
    cache = VerifiedTokens(ttl_s=60)
    cache.put("token-a", {"sub": "nurse", "exp": time.time() + 0.3})
    assert cache.get("token-a") == {"sub": "nurse", "exp": cache.get("token-a")["exp"]}  # type: ignore[index]
    assert cache.get("token-b") is None
    time.sleep(0.35)
    assert cache.get("token-a") is None


def test_entries_live_no_longer_than_the_ttl() -> None:
    cache = VerifiedTokens(ttl_s=0.2)
    cache.put("token", {"sub": "nurse", "exp": time.time() + 3600})
    assert cache.get("token") is not None
    time.sleep(0.25)
    assert cache.get("token") is None


def test_the_cache_is_bounded_and_hands_out_copies() -> None:
    cache = VerifiedTokens(ttl_s=60, max_entries=2)
    for name in ("one", "two", "three"):
        cache.put(name, {"sub": name, "exp": time.time() + 60})
    assert cache.get("one") is None and cache.get("three") is not None
    claims = cache.get("three")
    assert claims is not None
    claims["sub"] = "tampered"
    assert cache.get("three") == {"sub": "three", "exp": claims["exp"]}
