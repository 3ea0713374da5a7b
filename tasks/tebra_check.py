"""Where the Tebra check's report is kept: the last one, for ``GET /api/v1/ops/tebra`` (docs/tebra.md,
"Checking a clinic's Tebra account"). The check itself runs on a worker or from ``make check-tebra``
(tasks/tebra/check.py); the report holds names, counts and limits, never patient data."""

from __future__ import annotations

import json
from typing import Any

import redis

from tasks import keys

CHECK_TASK = "tebra.check"
REPORT_TTL_S = 30 * 86400


def store_report(client: redis.Redis, report: dict[str, Any]) -> None:
    """Keep ``report`` as the last check's."""
    client.set(keys.TEBRA_CHECK, json.dumps(report, sort_keys=True), ex=REPORT_TTL_S)


def last_report(client: redis.Redis) -> dict[str, Any] | None:
    """The last check's report, or None."""
    raw = client.get(keys.TEBRA_CHECK)
    return json.loads(raw) if raw else None
