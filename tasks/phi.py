"""Patient data kept out of keys and sealed in values.

- ``hpid``: a keyed HMAC (SHA-256, ``PHI_HMAC_KEY``) of the Tebra patient id. Keys, events, logs and metrics
  name patients only by it: without the key it cannot be reversed or matched against a list of ids.
- ``PhiCipher``: AES-256-GCM for PHI fields inside Redis values. A sealed value is ``v1.<key id>.<base64>``
  (nonce + ciphertext + tag); the key id beside it lets keys rotate: the first key of
  ``PHI_ENCRYPTION_KEYS`` seals, every listed key opens.
- The nonce is synthetic (an HMAC of the plaintext under a key derived from the same secret), so sealing
  the same value twice gives the same bytes: re-running a sync leaves Redis byte-for-byte identical. The
  cost, accepted and documented: equal plaintexts are visibly equal ciphertexts. Distinct plaintexts get
  distinct nonces (a 96-bit HMAC prefix), which is what GCM needs.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from config import Settings

SEALED_PREFIX = "v1."
# base64.urlsafe_b64decode's own step without its wrappers; on bytes (str.translate is ten times slower).
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def hpid(patient_id: str, key: str) -> str:
    """The keyed HMAC of a Tebra patient id, 24 hex characters (96 bits: no collisions in a clinic)."""
    # hmac.digest: OpenSSL's one-shot HMAC, the same bytes as hmac.new(...).digest() at half the cost.
    return hmac.digest(key.encode(), f"tebra-patient:{patient_id}".encode(), "sha256").hex()[:24]


def keyring(settings: Settings) -> tuple[dict[str, bytes], str]:
    """``PHI_ENCRYPTION_KEYS`` as key id -> secret, and the id of the key that seals (the first)."""
    keys: dict[str, bytes] = {}
    order: list[str] = []
    for item in settings.phi_encryption_keys.split(","):
        key_id, _, encoded = item.strip().partition(":")
        secret = base64.b64decode(encoded)
        if len(secret) != 32 or not key_id or "." in key_id:
            raise ValueError("PHI_ENCRYPTION_KEYS entries must be id:base64(32 bytes), id without dots")
        keys[key_id] = secret
        order.append(key_id)
    return keys, order[0]


class PhiCipher:
    """Seals and opens PHI strings with AES-256-GCM under rotating keys."""

    def __init__(self, keyring: Mapping[str, bytes], current: str) -> None:
        if current not in keyring:
            raise ValueError("the current PHI key id is not in the keyring")
        self._keys = {key_id: AESGCM(secret) for key_id, secret in keyring.items()}
        self._nonce_keys = {
            key_id: hmac.new(secret, b"clinic-relay phi nonce key", hashlib.sha256).digest()
            for key_id, secret in keyring.items()
        }
        self._current = current

    @classmethod
    def from_settings(cls, settings: Settings) -> PhiCipher:
        return cls(*keyring(settings))

    def seal(self, plaintext: str | None) -> str | None:
        """Encrypt one value (``None`` stays ``None``); the key id travels with it."""
        if plaintext is None:
            return None
        data = plaintext.encode()
        nonce = hmac.digest(self._nonce_keys[self._current], data, "sha256")[:12]
        blob = nonce + self._keys[self._current].encrypt(nonce, data, self._current.encode())
        return f"{SEALED_PREFIX}{self._current}.{base64.urlsafe_b64encode(blob).decode()}"

    def open(self, sealed: str | None) -> str | None:
        """Decrypt a value sealed under any key of the ring."""
        if sealed is None or sealed == "":
            return sealed
        if not sealed.startswith(SEALED_PREFIX):
            raise ValueError("value is not sealed")
        key_id, _, encoded = sealed[len(SEALED_PREFIX) :].partition(".")
        # binascii directly: a read opens one name per row, and the stdlib wrapper costs more than the AES.
        blob = binascii.a2b_base64(encoded.encode().translate(_URLSAFE_TO_STANDARD))
        return self._keys[key_id].decrypt(blob[:12], blob[12:], key_id.encode()).decode()

    def opener(self) -> Callable[[str | None], str | None]:
        """What opens values for one read of many (a board of 40 rows opens 80): :meth:`open` itself here."""
        return self.open

    def seal_fields(self, record: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
        """A copy of ``record`` with the named fields sealed."""
        sealed = dict(record)
        for name in names:
            if sealed.get(name) is not None:
                sealed[name] = self.seal(str(sealed[name]))
        return sealed

    def open_fields(self, record: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
        """A copy of ``record`` with the named fields opened."""
        opened = dict(record)
        for name in names:
            if opened.get(name):
                opened[name] = self.open(opened[name])
        return opened


class RememberingCipher(PhiCipher):
    """A :class:`PhiCipher` whose ``open`` remembers what it opened, and forgets all of it every
    ``forget_after_s`` seconds (the API's reads: a board read opens 80 values, mostly the same ones as the
    read before it, and the decryption was a fifth of the request's CPU, docs/benchmarks.md).

    What it holds is what the process served in the last ``forget_after_s`` seconds, at most
    ``max_entries`` values, in the same memory as the keys that open every sealed value in Redis: it widens
    nothing an attacker who can read that memory does not already have (docs/security.md). Sealing the same
    value gives the same bytes (the synthetic nonce), so the sealed string is the natural key; a rotated key
    seals to new strings, which are simply new entries. Failures are not remembered.
    """

    def __init__(
        self, keyring: Mapping[str, bytes], current: str, *, forget_after_s: float, max_entries: int = 20000
    ) -> None:
        super().__init__(keyring, current)
        self._forget_after_s = forget_after_s
        self._forget_at = time.monotonic() + forget_after_s
        # functools.lru_cache: thread-safe, bounded, and in C (a Python-level cache costs what it saves).
        self._remembered: Callable[[str | None], str | None] = functools.lru_cache(maxsize=max_entries)(
            super().open
        )

    def open(self, sealed: str | None) -> str | None:
        return self.opener()(sealed)

    def opener(self) -> Callable[[str | None], str | None]:
        """The remembering opener itself, after one look at the clock: a read of 80 values checks whether
        it is time to forget once, not 80 times (that wrapper was a fortieth of a board read's CPU)."""
        now = time.monotonic()
        if now >= self._forget_at:
            self._forget_at = now + self._forget_after_s
            self.forget()
        return self._remembered

    @property
    def remembered(self) -> int:
        """How many opened values it holds now."""
        return int(self._remembered.cache_info().currsize)  # type: ignore[attr-defined]

    def forget(self) -> None:
        """Drop every remembered value now."""
        self._remembered.cache_clear()  # type: ignore[attr-defined]
