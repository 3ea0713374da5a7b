"""The migration reseals what was stored before record binding: v1 values and reasons in clear."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import redis
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from config import load_settings
from tasks import keys
from tasks.patients.details import patient_id
from tasks.phi import DETAILS_FIELD, PhiCipher, keyring, patient_binding
from tasks.sync.store import ScheduleStore, canonical
from tests.unit.test_store import DATE, make_appointment
from workers.phi_migration import Migration

SETTINGS = load_settings({"APP_ENV": "test"})


def legacy_seal(plaintext: str) -> str:
    """A value as the previous release sealed it: bound to its key id only."""
    secrets, key_id = keyring(SETTINGS)
    nonce_key = hmac.new(secrets[key_id], b"clinic-relay phi nonce key", hashlib.sha256).digest()
    nonce = hmac.digest(nonce_key, plaintext.encode(), "sha256")[:12]
    blob = nonce + AESGCM(secrets[key_id]).encrypt(nonce, plaintext.encode(), key_id.encode())
    return f"v1.{key_id}.{base64.urlsafe_b64encode(blob).decode()}"


def test_legacy_values_and_clear_reasons_are_resealed_once(redis_client: redis.Redis) -> None:
    cipher = PhiCipher.from_settings(SETTINGS)
    store = ScheduleStore(redis_client, cipher, hmac_key=SETTINGS.phi_hmac_key, retention_days=1)
    appt = make_appointment(1, reason="Zorvak rash")
    entry_hpid = store.hpid(appt["patient_id"])
    old_row = {
        **appt,
        "hpid": entry_hpid,
        "patient_id": legacy_seal("501"),
        "patient_name": legacy_seal("Testa"),
    }
    redis_client.hset(keys.appointments(DATE), appt["id"], canonical(old_row))
    redis_client.sadd(keys.patients_index(DATE), entry_hpid)
    redis_client.hset(
        keys.patient(entry_hpid, DATE),
        mapping={
            "hpid": entry_hpid,
            "patient_id": legacy_seal("501"),
            "name": legacy_seal("Testa"),
            "dob": legacy_seal("1980-02-03"),
            "reason": "Zorvak rash",
            "status": "scheduled",
            "version": "1",
            "appointment_time": appt["start"],
        },
    )
    redis_client.set(keys.patient_details(entry_hpid), legacy_seal(json.dumps({"dob": "1980-02-03"})), ex=60)

    counts = Migration(redis_client, cipher).run()
    assert counts == {"appointments": 1, "patient_entries": 4, "patient_details": 1}  # rows, fields, keys
    assert Migration(redis_client, cipher).run() == {
        "appointments": 0,
        "patient_entries": 0,
        "patient_details": 0,
    }

    for key in redis_client.keys("*"):
        kind = redis_client.type(key)
        values = (
            redis_client.hvals(key) if kind == "hash" else [redis_client.get(key)] if kind == "string" else []
        )
        assert not any("Zorvak" in value or '"v1.' in value or value.startswith("v1.") for value in values), (
            key
        )
    assert patient_id(redis_client, cipher, DATE, entry_hpid) == "501"
    row = store.appointments_for([DATE])[0]
    assert (row["patient_name"], row["reason"]) == ("Testa", "Zorvak rash")
    entry = redis_client.hgetall(keys.patient(entry_hpid, DATE))
    assert cipher.open(entry["reason"], patient_binding(entry_hpid, "reason", DATE)) == "Zorvak rash"
    details = redis_client.get(keys.patient_details(entry_hpid))
    assert (
        json.loads(cipher.open(details, patient_binding(entry_hpid, DETAILS_FIELD)) or "")["dob"]
        == "1980-02-03"
    )
    assert 0 < redis_client.ttl(keys.patient_details(entry_hpid)) <= 60
