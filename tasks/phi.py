"""Patient data kept out of keys and sealed in values.

- ``hpid``: a keyed HMAC (SHA-256, ``PHI_HMAC_KEY``) of the Tebra patient id. Keys, events, logs and metrics
  name patients only by it: without the key it cannot be reversed or matched against a list of ids.
- ``PhiCipher``: AES-256-GCM for PHI fields inside Redis values. A sealed value is ``v2.<key id>.<base64>``
  (nonce + ciphertext + tag); the key id beside it lets keys rotate: the first key of
  ``PHI_ENCRYPTION_KEYS`` seals, every listed key opens.
- Every sealed value is bound to where it belongs: the GCM associated data names the key id, the record
  (``appointment:{id}`` or ``patient:{hpid}``), the field and the clinic day (:func:`appointment_binding`,
  :func:`patient_binding`). Someone who can write to Redis but has no key cannot move patient A's sealed
  name into B's entry, or Monday's into Tuesday's: the value no longer opens there. ``v1.`` values (bound
  to the key id only) are refused; ``python -m workers.phi_migration`` reseals what is stored.
- The nonce is synthetic (an HMAC of the binding and the plaintext under a key derived from the same
  secret), so sealing the same value in the same place twice gives the same bytes: re-running a sync leaves
  Redis byte-for-byte identical. The cost, accepted and documented: equal plaintexts in the same field of
  the same record are visibly equal ciphertexts. Distinct (binding, plaintext) pairs get distinct nonces
  (a 96-bit HMAC prefix), which is what GCM needs: one nonce never seals two messages.
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

SEALED_PREFIX = "v2."
LEGACY_PREFIX = "v1."  # bound to the key id only; opened by the migration alone
# The fields sealed in each kind of record: who the patient is, and the free text the clinic wrote.
APPOINTMENT_SEALED_FIELDS = ("patient_id", "patient_name", "reason")
PATIENT_SEALED_FIELDS = ("patient_id", "name", "dob", "reason")
DETAILS_FIELD = "details"  # the patient's cached GetPatient details (across days: no day in its binding)
# base64.urlsafe_b64decode's own step without its wrappers; on bytes (str.translate is ten times slower).
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def hpid(patient_id: str, key: str) -> str:
    """The keyed HMAC of a Tebra patient id, 24 hex characters (96 bits: no collisions in a clinic)."""
    # hmac.digest: OpenSSL's one-shot HMAC, the same bytes as hmac.new(...).digest() at half the cost.
    return hmac.digest(key.encode(), f"tebra-patient:{patient_id}".encode(), "sha256").hex()[:24]


def appointment_binding(appointment_id: str, field: str, day: str) -> str:
    """Where a sealed field of ``appointments:{day}``'s appointment ``appointment_id`` belongs."""
    return f"appointment:{appointment_id}|{field}|{day}"


def patient_binding(entry_hpid: str, field: str, day: str = "") -> str:
    """Where a sealed field of ``patient:{hpid}:{day}`` belongs (``day`` empty: the details cache)."""
    return f"patient:{entry_hpid}|{field}|{day}"


# seal(value, binding) and open(sealed, binding): PhiCipher's methods, or a cached copy of them for one write.
Sealer = Callable[[str | None, str], str | None]
Opener = Callable[[str | None, str], str | None]


def seal_appointment(seal: Sealer, appointment: Mapping[str, Any], day: str) -> dict[str, Any]:
    """A copy of a Tebra appointment of ``day`` with its patient and free-text fields sealed in place."""
    appointment_id = str(appointment["id"])
    record = dict(appointment)
    for name in APPOINTMENT_SEALED_FIELDS:
        if record.get(name) is not None:
            record[name] = seal(str(record[name]), appointment_binding(appointment_id, name, day))
    return record


def open_appointment(
    open_: Opener, record: Mapping[str, Any], day: str, names: Iterable[str] = APPOINTMENT_SEALED_FIELDS
) -> dict[str, Any]:
    """A copy of a stored appointment of ``day`` with the named sealed fields opened."""
    appointment_id = str(record["id"])
    opened = dict(record)
    for name in names:
        if opened.get(name):
            opened[name] = open_(opened[name], appointment_binding(appointment_id, name, day))
    return opened


def seal_patient(seal: Sealer, entry_hpid: str, day: str, field: str, value: str | None) -> str:
    """One field of the flow entry ``patient:{hpid}:{day}`` sealed for it ("" for no value)."""
    return (seal(value, patient_binding(entry_hpid, field, day)) or "") if value else ""


def open_patient(open_: Opener, entry_hpid: str, day: str, field: str, sealed: str | None) -> str | None:
    """One sealed field of the flow entry ``patient:{hpid}:{day}``, opened (None for none)."""
    return open_(sealed, patient_binding(entry_hpid, field, day)) if sealed else None


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

    def seal(self, plaintext: str | None, bound: str) -> str | None:
        """Encrypt one value (``None`` stays ``None``) for the place ``bound`` names (a ``*_binding``)."""
        if plaintext is None:
            return None
        data = plaintext.encode()
        aad = self._aad(self._current, bound)
        nonce = hmac.digest(self._nonce_keys[self._current], aad + b"\x00" + data, "sha256")[:12]
        blob = nonce + self._keys[self._current].encrypt(nonce, data, aad)
        return f"{SEALED_PREFIX}{self._current}.{base64.urlsafe_b64encode(blob).decode()}"

    def open(self, sealed: str | None, bound: str) -> str | None:
        """Decrypt a value sealed under any key of the ring for the place ``bound`` names; InvalidTag when
        it was sealed for another record, field or day (moved), or altered."""
        if sealed is None or sealed == "":
            return sealed
        if not sealed.startswith(SEALED_PREFIX):
            raise ValueError("value is not sealed" if not sealed.startswith(LEGACY_PREFIX) else _LEGACY)
        key_id, blob = self._split(sealed, SEALED_PREFIX)
        return self._keys[key_id].decrypt(blob[:12], blob[12:], self._aad(key_id, bound)).decode()

    def open_legacy(self, sealed: str) -> str:
        """A ``v1.`` value (bound to its key id only), for the migration that reseals it with a binding."""
        if not sealed.startswith(LEGACY_PREFIX):
            raise ValueError("not a v1 sealed value")
        key_id, blob = self._split(sealed, LEGACY_PREFIX)
        return self._keys[key_id].decrypt(blob[:12], blob[12:], key_id.encode()).decode()

    @staticmethod
    def _aad(key_id: str, bound: str) -> bytes:
        return f"{key_id}|{bound}".encode()

    @staticmethod
    def _split(sealed: str, prefix: str) -> tuple[str, bytes]:
        key_id, _, encoded = sealed[len(prefix) :].partition(".")
        # binascii directly: a read opens one name per row, and the stdlib wrapper costs more than the AES.
        return key_id, binascii.a2b_base64(encoded.encode().translate(_URLSAFE_TO_STANDARD))

    def opener(self) -> Callable[[str | None, str], str | None]:
        """What opens values for one read of many (a board of 40 rows opens 80): :meth:`open` itself here."""
        return self.open


_LEGACY = "value sealed without a record binding (v1): run python -m workers.phi_migration"


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
        self._remembered: Callable[[str | None, str], str | None] = functools.lru_cache(maxsize=max_entries)(
            super().open
        )

    def open(self, sealed: str | None, bound: str) -> str | None:
        return self.opener()(sealed, bound)

    def opener(self) -> Callable[[str | None, str], str | None]:
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
