"""Reseal what is stored under the bound format: ``python -m workers.phi_migration [--dry-run]``.

Before record binding, sealed values (``v1.``) were bound to their key id only, and appointment reasons were
stored in clear. This walks every day's appointments, every flow entry and every cached patient detail, and
rewrites each ``v1.`` value as a ``v2.`` value bound to its record, field and day (tasks/phi.py), and seals
every clear reason. It prints counts only, never a value. Running it twice changes nothing the second time.

Run it once after deploying, with the workers stopped (or before they start): each key is rewritten with a
compare-and-set (WATCH), so a concurrent write is never lost, but a sync that runs meanwhile may find
values it cannot open yet. The alternative, documented in docs/security.md: a full re-sync of every retained
day, then waiting ``RETENTION_DAYS`` for the details cache to cycle.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Sequence

import orjson
import redis

from config import load_settings
from tasks.connections import make_redis
from tasks.phi import (
    APPOINTMENT_SEALED_FIELDS,
    DETAILS_FIELD,
    LEGACY_PREFIX,
    PATIENT_SEALED_FIELDS,
    SEALED_PREFIX,
    PhiCipher,
    appointment_binding,
    patient_binding,
)
from tasks.sync.store import canonical

FREE_TEXT_FIELDS = ("reason",)  # stored in clear before; every other sealed field was already v1
SCAN_BATCH = 500


def resealed(cipher: PhiCipher, value: str, field: str, bound: str) -> str | None:
    """The value in the bound format, or None when it is already in it (or empty)."""
    if not value or value.startswith(SEALED_PREFIX):
        return None
    if value.startswith(LEGACY_PREFIX):
        return cipher.seal(cipher.open_legacy(value), bound)
    if field in FREE_TEXT_FIELDS:
        return cipher.seal(value, bound)
    return None  # not a sealed field's value: left as it is


class Migration:
    """One pass over a Redis database; ``counts`` says what it rewrote, by kind of key."""

    def __init__(self, client: redis.Redis, cipher: PhiCipher, *, dry_run: bool = False) -> None:
        self._redis = client
        self._cipher = cipher
        self._dry_run = dry_run
        self.counts: Counter[str] = Counter()

    def run(self) -> Counter[str]:
        for key in self._redis.scan_iter(match="appointments:*", count=SCAN_BATCH, _type="hash"):
            self._rewrite_hash(key, self._appointment_fields(key.split(":", 1)[1]), "appointments")
        for key in self._redis.scan_iter(match="patient:*:*", count=SCAN_BATCH, _type="hash"):
            _, entry_hpid, day = key.split(":", 2)
            self._rewrite_hash(key, self._entry_fields(entry_hpid, day), "patient_entries")
        for key in self._redis.scan_iter(match="patient:details:*", count=SCAN_BATCH, _type="string"):
            self._rewrite_details(key)
        return self.counts

    def _appointment_fields(self, day: str) -> Callable[[str, str], str | None]:
        def rewrite(appointment_id: str, value: str) -> str | None:
            record = orjson.loads(value)
            changed = False
            for field in APPOINTMENT_SEALED_FIELDS:
                bound = appointment_binding(appointment_id, field, day)
                new = resealed(self._cipher, str(record.get(field) or ""), field, bound)
                if new is not None:
                    record[field], changed = new, True
            return canonical(record) if changed else None

        return rewrite

    def _entry_fields(self, entry_hpid: str, day: str) -> Callable[[str, str], str | None]:
        def rewrite(field: str, value: str) -> str | None:
            if field not in PATIENT_SEALED_FIELDS:
                return None
            return resealed(self._cipher, value, field, patient_binding(entry_hpid, field, day))

        return rewrite

    def _rewrite_hash(self, key: str, rewrite: Callable[[str, str], str | None], kind: str) -> None:
        def change(pipe: redis.client.Pipeline) -> None:
            updates = {
                name: new
                for name, value in pipe.hgetall(key).items()
                if (new := rewrite(name, value)) is not None
            }
            if updates and not self._dry_run:
                pipe.multi()
                pipe.hset(key, mapping=updates)
            self.counts[kind] += len(updates)

        self._redis.transaction(change, key)

    def _rewrite_details(self, key: str) -> None:
        entry_hpid = key.rsplit(":", 1)[1]

        def change(pipe: redis.client.Pipeline) -> None:
            value = pipe.get(key) or ""
            new = resealed(self._cipher, value, DETAILS_FIELD, patient_binding(entry_hpid, DETAILS_FIELD))
            if new is not None and not self._dry_run:
                pipe.multi()
                pipe.set(key, new, keepttl=True)
            self.counts["patient_details"] += new is not None

        self._redis.transaction(change, key)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.phi_migration", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--dry-run", action="store_true", help="count what would change, write nothing")
    args = parser.parse_args(argv)
    settings = load_settings()
    client = make_redis(settings)  # the primary the sentinels name, over TLS, as every other client
    counts = Migration(client, PhiCipher.from_settings(settings), dry_run=args.dry_run).run()
    verb = "would reseal" if args.dry_run else "resealed"
    kinds = ("appointments", "patient_entries", "patient_details")
    print(f"{verb}: " + ", ".join(f"{counts[kind]} {kind} values" for kind in kinds), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
