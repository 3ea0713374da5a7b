"""How far behind our clock Tebra's LastModifiedDate stamps run, measured from its replies.

Tebra writes LastModifiedDate as wall time with no zone, and which zone is undocumented: integrators see the
practice's zone, the server's, and UTC. We read it in CLINIC_TZ. If Tebra stamps in a zone west of the clinic
(Pacific for a Chicago practice), a change made at 10:00 clinic time is stamped 08:00, and an incremental read
that asks for "modified since 09:55" never sees it. So every incremental read starts earlier by how far the
stamps may run behind, measured here from what every read returns:

- **at most** (``behind_max_s``): a change read by a read that ended at E was made at or before E, so its
  stamp S can run behind by at most E - S. The smallest E - S over the changes of recent reads bounds the lag
  from above, and is tight because a change is seen soon after it is made. Stamps ahead of our clock make it
  negative: no widening needed. Only changes count (a new version of an appointment we held): rows we see
  for the first time may carry any stamp (a booking imported with a future date), changes cannot.
- **at least** (``behind_min_s``): a new version of an appointment, where the old version was still current
  at a moment T (the start of a read that returned it), was modified after T; if its stamp is before T,
  the stamps run behind by at least T - S.

Incremental reads start ``TEBRA_MODIFIED_OVERLAP_S`` plus the larger of the two earlier (never less than
the overlap). Until a read has seen one change there is no bound at all: the watch then reads the horizon in
full at every poll (the same one call), which sees every change whatever the stamps say.
Bounds older than a day are dropped (a zone's daylight-saving change moves the lag by an hour).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from tasks import keys
from tasks.events import parse_instant

BOUND_TTL_S = 86400  # a bound is kept this long after it was last tightened


@dataclass(frozen=True)
class Clock:
    """The measured bounds, seconds (None: not measured)."""

    behind_max_s: float | None
    behind_min_s: float | None

    @property
    def allowance_s(self) -> float | None:
        """How much earlier an incremental read must start than the last read began; None: unknown."""
        if self.behind_max_s is None:
            return None
        return max(0.0, self.behind_max_s, self.behind_min_s or 0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "behind_max_s": None if self.behind_max_s is None else round(self.behind_max_s, 1),
            "behind_min_s": None if self.behind_min_s is None else round(self.behind_min_s, 1),
            "allowance_s": None if self.allowance_s is None else round(self.allowance_s, 1),
        }


def read(client: redis.Redis) -> Clock:
    """The bounds as stored (one HMGET)."""
    raw = client.hmget(keys.TEBRA_CLOCK, ["behind_max_s", "behind_min_s"])
    return Clock(*(float(value) if value not in (None, "") else None for value in raw))


def bounds(read_ended: datetime, changes: Sequence[tuple[str, str]]) -> Clock:
    """The bounds one read gives: it ended at ``read_ended`` and saw ``changes``, each (the new version's
    LastModifiedDate, the ISO UTC moment the old version was last known current)."""
    lags = [
        (read_ended - stamp).total_seconds()
        for new, _ in changes
        if (stamp := parse_instant(new)) is not None
    ]
    behind_max = min(lags) if lags else None
    floors = [
        (was_current - stamp).total_seconds()
        for new, old_seen in changes
        if (stamp := parse_instant(new)) is not None and (was_current := parse_instant(old_seen)) is not None
    ]
    behind_min = max(floors) if floors else None
    return Clock(behind_max, behind_min)


# KEYS[1] the clock hash. ARGV[1] this read's behind_max ('' none), ARGV[2] behind_min ('' none), ARGV[3] TTL.
# The smaller upper bound and the larger lower bound win; the hash expires a day after its last tightening.
_MERGE_LUA = """
local stored = redis.call('HMGET', KEYS[1], 'behind_max_s', 'behind_min_s')
local changed = false
if ARGV[1] ~= '' and (not stored[1] or tonumber(ARGV[1]) < tonumber(stored[1])) then
  redis.call('HSET', KEYS[1], 'behind_max_s', ARGV[1])
  changed = true
end
if ARGV[2] ~= '' and (not stored[2] or tonumber(ARGV[2]) > tonumber(stored[2])) then
  redis.call('HSET', KEYS[1], 'behind_min_s', ARGV[2])
  changed = true
end
if changed then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return changed and 1 or 0
"""


def observe(client: redis.Redis, measured: Clock) -> Clock:
    """Fold one read's bounds into the stored ones; returns the bounds now in force."""
    args = [
        "" if value is None else f"{value:.3f}" for value in (measured.behind_max_s, measured.behind_min_s)
    ]
    if any(args):
        client.eval(_MERGE_LUA, 1, keys.TEBRA_CLOCK, *args, BOUND_TTL_S)
    return read(client)
