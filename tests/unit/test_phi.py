"""Patient ids become keyed HMACs; PHI fields are sealed with AES-GCM under rotating keys."""

from __future__ import annotations

import base64
import time

import pytest
from cryptography.exceptions import InvalidTag

from config import load_settings
from tasks.phi import PhiCipher, RememberingCipher, appointment_binding, hpid, keyring, patient_binding

HERE = patient_binding("a" * 24, "name", "2026-06-16")


def test_hpid_is_keyed_stable_and_not_the_id() -> None:
    assert hpid("12345", "k1") == hpid("12345", "k1")
    assert hpid("12345", "k1") != hpid("12345", "k2")
    assert "12345" not in hpid("12345", "k1")
    assert len(hpid("12345", "k1")) == 24


def test_seal_round_trips_and_hides_the_value() -> None:
    cipher = PhiCipher.from_settings(load_settings({"APP_ENV": "test"}))
    sealed = cipher.seal("Zorvak Melquine", HERE)
    assert sealed is not None and "Zorvak" not in sealed and sealed.startswith("v2.k1.")
    assert cipher.open(sealed, HERE) == "Zorvak Melquine"
    assert cipher.seal(None, HERE) is None


def test_sealing_is_deterministic_so_rewrites_are_identical() -> None:
    cipher = PhiCipher.from_settings(load_settings({"APP_ENV": "test"}))
    assert cipher.seal("same", HERE) == cipher.seal("same", HERE)
    assert cipher.seal("same", HERE) != cipher.seal("other", HERE)


def test_rotation_opens_old_values_and_seals_with_the_new_key() -> None:
    old_key = base64.b64encode(b"o" * 32).decode()
    new_key = base64.b64encode(b"n" * 32).decode()
    old = PhiCipher.from_settings(load_settings({"APP_ENV": "test", "PHI_ENCRYPTION_KEYS": f"old:{old_key}"}))
    rotated = PhiCipher.from_settings(
        load_settings({"APP_ENV": "test", "PHI_ENCRYPTION_KEYS": f"new:{new_key},old:{old_key}"})
    )
    sealed_before = old.seal("value", HERE)
    assert rotated.open(sealed_before, HERE) == "value"
    assert (rotated.seal("value", HERE) or "").startswith("v2.new.")


def test_tampered_ciphertext_is_refused() -> None:
    cipher = PhiCipher.from_settings(load_settings({"APP_ENV": "test"}))
    sealed = cipher.seal("value", HERE) or ""
    head, _, body = sealed.rpartition(".")
    raw = bytearray(base64.urlsafe_b64decode(body))
    raw[-1] ^= 1
    with pytest.raises(InvalidTag):
        cipher.open(f"{head}.{base64.urlsafe_b64encode(bytes(raw)).decode()}", HERE)


def test_bad_key_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        PhiCipher.from_settings(
            load_settings(
                {"APP_ENV": "test", "PHI_ENCRYPTION_KEYS": "k:" + base64.b64encode(b"short").decode()}
            )
        )


def test_the_remembering_cipher_opens_the_same_and_forgets_on_time() -> None:
    settings = load_settings({"APP_ENV": "test"})
    plain = PhiCipher.from_settings(settings)
    remembering = RememberingCipher(*keyring(settings), forget_after_s=0.2)
    sealed = [plain.seal(name, HERE) for name in ("Zorvak Melquine", "Ilsa Troon")]
    assert [remembering.open(value, HERE) for value in sealed] == ["Zorvak Melquine", "Ilsa Troon"]
    assert remembering.remembered == 2
    assert remembering.open(sealed[0], HERE) == "Zorvak Melquine" and remembering.remembered == 2
    time.sleep(0.25)
    assert remembering.open(sealed[1], HERE) == "Ilsa Troon"
    assert remembering.remembered == 1  # everything older than forget_after_s was dropped first


def test_the_remembering_cipher_still_refuses_what_it_cannot_open() -> None:
    remembering = RememberingCipher(*keyring(load_settings({"APP_ENV": "test"})), forget_after_s=60)
    sealed = remembering.seal("value", HERE) or ""
    head, _, body = sealed.rpartition(".")
    raw = bytearray(base64.urlsafe_b64decode(body))
    raw[-1] ^= 1
    for _ in range(2):  # a failure is not remembered: refused every time
        with pytest.raises(InvalidTag):
            remembering.open(f"{head}.{base64.urlsafe_b64encode(bytes(raw)).decode()}", HERE)
    assert remembering.remembered == 0
    with pytest.raises(ValueError, match="not sealed"):
        remembering.open("plain text", HERE)


def test_a_sealed_value_moved_to_another_record_field_or_day_does_not_open() -> None:
    """A Redis writer without the key moves patient A's sealed name into B's entry (or another field, or
    another day): it used to open there as if it belonged; now the binding refuses it."""
    cipher = PhiCipher.from_settings(load_settings({"APP_ENV": "test"}))
    sealed = cipher.seal("Zorvak Melquine", patient_binding("a" * 24, "name", "2026-06-16"))
    elsewhere = [
        patient_binding("b" * 24, "name", "2026-06-16"),  # patient B's entry
        patient_binding("a" * 24, "reason", "2026-06-16"),  # another field of A's entry
        patient_binding("a" * 24, "name", "2026-06-17"),  # A's entry of another day
        appointment_binding("a" * 24, "name", "2026-06-16"),  # an appointment, not a flow entry
    ]
    for bound in elsewhere:
        with pytest.raises(InvalidTag):
            cipher.open(sealed, bound)
    assert cipher.open(sealed, patient_binding("a" * 24, "name", "2026-06-16")) == "Zorvak Melquine"


def test_the_same_value_sealed_in_two_places_uses_two_nonces() -> None:
    cipher = PhiCipher.from_settings(load_settings({"APP_ENV": "test"}))
    one = cipher.seal("same", patient_binding("a" * 24, "name", "2026-06-16")) or ""
    two = cipher.seal("same", patient_binding("b" * 24, "name", "2026-06-16")) or ""
    nonce = lambda value: base64.urlsafe_b64decode(value.rpartition(".")[2])[:12]  # noqa: E731
    assert nonce(one) != nonce(two)


def test_an_unbound_v1_value_is_refused_naming_the_migration() -> None:
    cipher = PhiCipher.from_settings(load_settings({"APP_ENV": "test"}))
    legacy = "v1." + (cipher.seal("x", HERE) or "")[3:]
    with pytest.raises(ValueError, match="phi_migration"):
        cipher.open(legacy, HERE)
