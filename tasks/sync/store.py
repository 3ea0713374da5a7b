"""The day's schedule in Redis: appointments and patient-flow entries, written idempotently.

``appointments:{date}`` holds appointment id -> JSON, with the patient's id, name and the reason sealed, each
bound to its appointment, field and day (tasks/phi.py). Each
``patient:{hpid}:{date}`` hash is one patient's flow entry; ``patients:{date}`` indexes the day's hpids.
A full sync makes the day's appointments exactly Tebra's set; the flow entries merge Tebra's status with
what the clinic set locally (a sync never moves a patient backwards past a local change). Writing the same
sync twice changes no byte: values are canonical JSON and sealing is deterministic (tasks/phi.py).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from redis.client import Pipeline

from tasks import keys
from tasks.events import utc_now_iso
from tasks.patients import flow
from tasks.phi import PhiCipher, Sealer, hpid, open_appointment, open_patient, seal_appointment, seal_patient

# One call merges a whole day (one round trip, the day's ranks and stamps sent once). KEYS[1] the day index,
# KEYS[2..] the patients' keys; ARGV[1] JSON {state: rank}; ARGV[2] TTL s; ARGV[3] now ISO; ARGV[4] JSON
# {state: timestamp field}; ARGV[5] JSON list, per patient key in order, of [Tebra's flow status, [field,
# value, field, value, ...] a sync owns]; ARGV[6] JSON {state: true} of the states that end a visit before
# arrival. Returns four values per patient: a code (0 unchanged, 1 created, 2 fields changed, 3 status
# changed, 4 flagged: Tebra ended a visit the clinic has under way), the status before, the version after and
# the room, so a change is announced from what the script saw, with no read before or after. One HMGET of the
# control fields tells a new entry, which is written with the incoming list as it came (no copy); an existing
# one is compared field by field with one HMGET and changed with one HSET. (One JSON argument, not 900 flat
# ones: redis-py packs each argument in Python, which cost more than cjson saves in Redis.)
# The flag (``tebra_conflict``, docs/board.md): Tebra cancels (or no-shows, reschedules) a visit the clinic
# moved past "confirmed" itself. The entry keeps the clinic's status and says what Tebra says; the clinic's
# next change resolves it (``conflict_resolved`` keeps the flag it answered, so the same news is not raised
# again). An entry whose appointment Tebra shows as an ordinary visit again loses both.
_MERGE_PATIENTS_LUA = """
local ranks = cjson.decode(ARGV[1])
local stamp_fields = cjson.decode(ARGV[4])
local ttl, now = ARGV[2], ARGV[3]
local entries = cjson.decode(ARGV[5])
local ended = cjson.decode(ARGV[6])
local codes, hpids = {}, {}
for i, entry in ipairs(entries) do
  local key = KEYS[i + 1]
  local new_status, items = entry[1], entry[2]
  local result = 0
  local control = redis.call('HMGET', key, 'status', 'status_source', 'version', 'room', 'tebra_conflict',
                             'conflict_resolved')
  local current, source = control[1], control[2]
  local version, room = tonumber(control[3]) or 0, control[4] or ''
  if not current then
    -- No status: a new entry (an entry always has one once written).
    redis.call('HSET', key, unpack(items))
    redis.call('HSET', key, 'status', new_status, 'status_source', 'tebra', 'version', 1, 'updated_at', now,
               'room', '')
    local stamp = stamp_fields[new_status]
    if stamp then redis.call('HSET', key, stamp, now) end
    result, current, version, room = 1, '', 1, ''
  else
    local names = {}
    for j = 1, #items, 2 do names[#names + 1] = items[j] end
    local stored = redis.call('HMGET', key, unpack(names))
    local changed = {}
    for n, name in ipairs(names) do
      local value = items[2 * n]
      if stored[n] ~= value then
        changed[#changed + 1] = name
        changed[#changed + 1] = value
      end
    end
    if #changed > 0 then
      redis.call('HSET', key, unpack(changed))
      result = 2
    end
    local conflict = ''
    if current ~= new_status then
      local cur_rank = ranks[current] or 0
      local new_rank = ranks[new_status] or 0
      -- Tebra speaks for a status it set; over a status the clinic set locally it may only move forward
      -- (flow.RANKS puts cancelled/no-show/rescheduled below "arrived": they never undo a check-in).
      if (source ~= 'local') or (new_rank > cur_rank) then
        redis.call('HSET', key, 'status', new_status, 'status_source', 'tebra', 'updated_at', now)
        version = redis.call('HINCRBY', key, 'version', 1)
        local stamp = stamp_fields[new_status]
        if stamp then
          local have = redis.call('HGET', key, stamp)
          if not have or have == '' then redis.call('HSET', key, stamp, now) end
        end
        result = 3
      elseif ended[new_status] and cur_rank >= ranks['arrived'] then
        conflict = '{"kind":"status","status":' .. cjson.encode(new_status) .. '}'
      end
    end
    local flagged, resolved = control[5] or '', control[6] or ''
    if conflict == '' then
      if flagged ~= '' or resolved ~= '' then
        redis.call('HDEL', key, 'tebra_conflict', 'conflict_resolved')
        if result == 0 then result = 2 end
      end
    elseif conflict ~= flagged and conflict ~= resolved then
      redis.call('HSET', key, 'tebra_conflict', conflict)
      if result ~= 3 then result = 4 end
    end
  end
  hpids[#hpids + 1] = string.match(key, '^patient:([^:]+):')
  redis.call('EXPIRE', key, ttl)
  codes[#codes + 1] = result
  codes[#codes + 1] = current
  codes[#codes + 1] = version
  codes[#codes + 1] = room
end
if #hpids > 0 then
  redis.call('SADD', KEYS[1], unpack(hpids))
  redis.call('EXPIRE', KEYS[1], ttl)
end
return codes
"""


_RANKS = json.dumps(flow.RANKS)
_STAMPS = json.dumps(flow.TIMESTAMP_FIELDS)
_ENDED = json.dumps(dict.fromkeys(flow.ENDED_BEFORE_ARRIVAL, True))


@dataclass(frozen=True)
class StatusMove:
    """A status the sync changed, as the merge script left it: announced as ``patient_status_changed``;
    or, with ``flagged``, a Tebra status the entry was flagged with instead (``patient_conflict``)."""

    hpid: str
    status: str
    previous: str
    version: int
    room: str
    flagged: bool = False
    tebra_status: str = ""


@dataclass(frozen=True)
class WriteCounts:
    """What one sync changed in Redis."""

    appointments: int
    added: int
    updated: int
    removed: int
    patients: int
    patients_created: int
    patients_changed: int
    status_changed: int
    changed_statuses: tuple[StatusMove, ...] = ()
    moved_in: int = 0  # appointments that came from another day
    moved_out: int = 0  # appointments that left for another day (counted in ``removed`` too)
    patients_removed: int = 0  # patients who left the board: no appointment left that day
    conflicts: int = 0  # entries newly flagged ``tebra_conflict``

    def as_dict(self) -> dict[str, int]:
        return {
            "appointments": self.appointments,
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "moved_in": self.moved_in,
            "moved_out": self.moved_out,
            "patients": self.patients,
            "patients_created": self.patients_created,
            "patients_changed": self.patients_changed,
            "patients_removed": self.patients_removed,
            "status_changed": self.status_changed,
            "conflicts": self.conflicts,
        }

    @property
    def changed_anything(self) -> bool:
        """Whether the write changed what the board or the API shows."""
        return any(
            value for name, value in self.as_dict().items() if name not in {"appointments", "patients"}
        )


def _entries_json(entries: dict[str, tuple[list[str], str]]) -> bytes:
    """The merge script's per-patient argument: [status, [field, value, ...]] in key order."""
    return orjson.dumps([(status, fields) for fields, status in entries.values()])


def counts_of(
    sealed: dict[str, str],
    current: dict[str, str],
    changed: dict[str, str],
    removed: list[str],
    entries: dict[str, Any],
    merged: Sequence[Any],
    *,
    moved_in: int = 0,
    moved_out: int = 0,
    left: Sequence[str] = (),
) -> WriteCounts:
    """One day's write, counted from what the merge script answered (four values per patient) and what the
    leave script answered for each patient left without an appointment (tasks/sync/reconcile.py)."""
    codes = [int(code) for code in merged[::4]]
    moves = tuple(
        # A flagged entry keeps its status (the one before); what Tebra says is in ``tebra_status``.
        StatusMove(
            entry_hpid,
            str(previous) if code == 4 else entries[entry_hpid][1],
            str(previous),
            int(version),
            str(room),
            flagged=code == 4,
            tebra_status=entries[entry_hpid][1],
        )
        for entry_hpid, code, previous, version, room in zip(
            entries, codes, merged[1::4], merged[2::4], merged[3::4], strict=True
        )
        if code in (3, 4)
    )
    return WriteCounts(
        appointments=len(sealed),
        added=sum(1 for appt_id in changed if appt_id not in current),
        updated=sum(1 for appt_id in changed if appt_id in current),
        removed=len(removed),
        patients=len(entries),
        patients_created=sum(1 for code in codes if code == 1),
        patients_changed=sum(1 for code in codes if code in (2, 3, 4)),
        status_changed=sum(1 for move in moves if not move.flagged),
        changed_statuses=moves,
        moved_in=moved_in,
        moved_out=moved_out,
        patients_removed=sum(1 for outcome in left if outcome == "removed"),
        conflicts=sum(1 for outcome in left if outcome == "conflict") + sum(1 for m in moves if m.flagged),
    )


def canonical(record: dict[str, Any]) -> str:
    """The one JSON spelling of a record: sorted keys, no spaces, UTF-8 (byte-identical on rewrite).

    orjson, a tenth of json.dumps's cost for a day's 40 rows. It writes non-ASCII text as itself where
    json.dumps wrote ``\\uXXXX``: a row stored before that change with such text is rewritten once, by the
    next sync of its day (counted as updated), and stays identical after that.
    """
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode()


class ScheduleStore:
    """Reads and writes one clinic's days in Redis."""

    def __init__(self, client: redis.Redis, cipher: PhiCipher, *, hmac_key: str, retention_days: int) -> None:
        self._redis = client
        self._cipher = cipher
        self._hmac_key = hmac_key
        self._ttl = retention_days * 86400
        self._merge = client.register_script(_MERGE_PATIENTS_LUA)

    def hpid(self, patient_id: str) -> str:
        return hpid(patient_id, self._hmac_key)

    # -- writes (worker) -------------------------------------------------------------------------------------

    @property
    def redis(self) -> redis.Redis:
        return self._redis

    @property
    def ttl_s(self) -> int:
        """How long a day's keys live after their last write (RETENTION_DAYS)."""
        return self._ttl

    # -- the building blocks of a write (tasks/sync/reconcile.py writes reads of Tebra with these) ----------

    def sealers(self) -> tuple[Sealer, Callable[[str], str]]:
        """The sealer and the hpid function of one write: each patient's id appears in several rows, so the
        hpid is computed once per write (each sealed value is bound to its own record, field and day, so no
        two seals are the same work)."""
        return self._cipher.seal, functools.lru_cache(maxsize=None)(self.hpid)

    def open_appointment(self, value: str, date: str) -> dict[str, Any]:
        """A stored appointment of ``date`` as the row it was written from (PHI opened)."""
        return open_appointment(self._cipher.open, orjson.loads(value), date)

    def queue_merge(self, pipe: Pipeline, date: str, entries: dict[str, tuple[list[str], str]]) -> None:
        """Queue the merge of the day's flow entries (see the script above) on ``pipe``."""
        entry_keys = [keys.patient(entry_hpid, date) for entry_hpid in entries]
        self._merge(
            keys=[keys.patients_index(date), *entry_keys],
            args=[_RANKS, self._ttl, utc_now_iso(), _STAMPS, _entries_json(entries), _ENDED],
            client=pipe,
        )

    @staticmethod
    def seal_appointment(
        appt: dict[str, Any], date: str, seal: Sealer, hpid_of: Callable[[str], str]
    ) -> dict[str, Any]:
        """The appointment as stored on ``date``: the patient's id, name and reason sealed (bound to it), the
        hpid beside them."""
        record = seal_appointment(seal, appt, date)
        record["hpid"] = hpid_of(str(appt["patient_id"])) if appt.get("patient_id") else ""
        return record

    @staticmethod
    def patient_entries(
        date: str, appointments: Iterable[dict[str, Any]], seal: Sealer, hpid_of: Callable[[str], str]
    ) -> dict[str, tuple[list[str], str]]:
        """One flow entry per patient (its fields as a flat field, value list, for the merge script's one
        HSET): the day's earliest appointment of that patient speaks for them."""
        by_patient: dict[str, dict[str, Any]] = {}
        for appt in sorted(appointments, key=lambda a: (str(a.get("start") or ""), str(a["id"]))):
            patient_id = str(appt.get("patient_id") or "")
            if patient_id:
                by_patient.setdefault(hpid_of(patient_id), appt)
        entries: dict[str, tuple[list[str], str]] = {}
        for entry_hpid, appt in by_patient.items():
            sealed = functools.partial(seal_patient, seal, entry_hpid, date)
            fields = [
                "hpid", entry_hpid,
                "date", date,
                "appointment_id", str(appt["id"]),
                "patient_id", sealed("patient_id", str(appt["patient_id"])),
                "name", sealed("name", str(appt.get("patient_name") or "")),
                "appointment_time", str(appt.get("start") or ""),
                "provider", str(appt.get("provider_name") or ""),
                "location", str(appt.get("location") or ""),
                "reason", sealed("reason", str(appt.get("reason") or "")),
                "tebra_status", str(appt.get("tebra_status") or ""),
            ]  # fmt: skip
            entries[entry_hpid] = (fields, str(appt.get("status") or flow.SCHEDULED))
        return entries

    # -- reads (API) -----------------------------------------------------------------------------------------

    def appointments_for(
        self, dates: Sequence[str], also: Callable[[Pipeline], None] | None = None
    ) -> list[dict[str, Any]]:
        """The appointments of several days, PHI opened, ordered by start time (one round trip).

        ``also`` may queue commands of its own on the read's pipeline first (the API's audit record).
        """
        pipe = self._redis.pipeline(transaction=False)
        if also is not None:
            also(pipe)
        for date in dates:
            pipe.hvals(keys.appointments(date))
        rows: list[dict[str, Any]] = []
        open_phi = self._cipher.opener()
        for date, values in zip(dates, pipe.execute()[-len(dates) :] if dates else (), strict=True):
            for value in values:
                record = orjson.loads(value)
                record.pop("patient_id", None)  # the raw Tebra id stays inside the system: not even opened
                rows.append(open_appointment(open_phi, record, date, ("patient_name", "reason")))
        rows.sort(key=lambda r: (str(r.get("start") or ""), str(r.get("id"))))
        return rows

    def patient_ids(self, date: str) -> dict[str, str]:
        """hpid -> raw Tebra patient id for the day (for the worker's GetPatient lookups)."""
        hpids = sorted(self._redis.smembers(keys.patients_index(date)))
        pipe = self._redis.pipeline(transaction=False)
        for entry_hpid in hpids:
            pipe.hget(keys.patient(entry_hpid, date), "patient_id")
        return {
            entry_hpid: open_patient(self._cipher.open, entry_hpid, date, "patient_id", sealed) or ""
            for entry_hpid, sealed in zip(hpids, pipe.execute(), strict=True)
            if sealed
        }
