"""The day's board and the clinic's status changes: read in one round trip, changed in one Lua script.

A status change (``PATCH /patients/{hpid}/status``) is one script run: it reads the entry, checks the
version and the state machine (tasks/patients/flow.py), writes status, ``status_source=local``, version+1, the
entry timestamp and the room, then appends ``patient_status_changed`` to ``agent_updates`` and publishes it
on its database's events channel (``keys.events_channel``), exactly as :class:`tasks.events.EventPublisher`
does. Redis runs one script at a time, so two nurses clicking at once serialize: the second sees the first's
version (or status) and is refused, and every accepted change has exactly one event, in stream order. No
event names a patient: only the hpid.

A sync changes statuses through the merge script in tasks/sync/store.py, which reports each change it made;
tasks/sync/announce.py announces each with the same event.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError

from tasks import keys
from tasks.events import utc_now_iso
from tasks.patients import flow
from tasks.phi import Opener, PhiCipher, open_patient

# The flow-entry fields the board shows, in the order the SORT ... GET below returns them (after the hpid).
BOARD_FIELDS = (
    "name",
    "dob",
    "appointment_time",
    "provider",
    "location",
    "reason",
    "room",
    "status",
    "status_source",
    "version",
    "checkin_time",
    "with_doctor_time",
    "completed_time",
    "updated_at",
    "details",
    "tebra_conflict",
)
_ALLOWED_NEXT = {state: flow.allowed_next(state) for state in flow.STATES}

# KEYS[1] patient key, KEYS[2] agent_updates. ARGV[1] requested status, ARGV[2] room, ARGV[3] '1' when the
# room is given (else kept), ARGV[4] expected version ('' = any), ARGV[5] JSON {state: [allowed next]},
# ARGV[6] JSON {state: timestamp field}, ARGV[7] now (ISO UTC, also the event's ts), ARGV[8] stream maxlen,
# ARGV[9] sender, ARGV[10] channel, ARGV[11] date, ARGV[12] hpid.
# Returns {outcome, status before, version after (or current), stream id, room}; outcome: ok | not_found |
# stale | forbidden. The same status with a new room is a room change (version+1, event); the same status
# and room is refused like any transition the machine does not allow.
_CHANGE_STATUS_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found', '', '0', '', ''} end
local entry = redis.call('HMGET', KEYS[1], 'status', 'version', 'room')
local current = entry[1] or ''
local version = tonumber(entry[2]) or 0
local room = entry[3] or ''
if ARGV[4] ~= '' and tonumber(ARGV[4]) ~= version then
  return {'stale', current, tostring(version), '', room}
end
local requested = ARGV[1]
local new_room = room
if ARGV[3] == '1' then new_room = ARGV[2] end
if requested == current then
  if new_room == room then return {'forbidden', current, tostring(version), '', room} end
else
  local allowed = false
  for _, state in ipairs(cjson.decode(ARGV[5])[current] or {}) do
    if state == requested then allowed = true end
  end
  if not allowed then return {'forbidden', current, tostring(version), '', room} end
end
version = version + 1
redis.call('HSET', KEYS[1], 'status', requested, 'status_source', 'local', 'version', version,
           'room', new_room, 'updated_at', ARGV[7])
-- The clinic's change answers a Tebra conflict flag: remembered as resolved, so the same news is not raised
-- again by the next read (tasks/sync/store.py, the merge script).
local flagged = redis.call('HGET', KEYS[1], 'tebra_conflict')
if flagged and flagged ~= '' then
  redis.call('HSET', KEYS[1], 'conflict_resolved', flagged)
  redis.call('HDEL', KEYS[1], 'tebra_conflict')
end
if requested ~= current then
  local stamp = cjson.decode(ARGV[6])[requested]
  if stamp then redis.call('HSET', KEYS[1], stamp, ARGV[7]) end
end
local payload = '{"date":' .. cjson.encode(ARGV[11]) .. ',"hpid":' .. cjson.encode(ARGV[12]) ..
  ',"previous":' .. cjson.encode(current) .. ',"room":' .. cjson.encode(new_room) ..
  ',"status":' .. cjson.encode(requested) .. ',"version":' .. version .. '}'
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'sender', ARGV[9],
                      'action', 'patient_status_changed', 'ts', ARGV[7], 'payload', payload)
redis.call('PUBLISH', ARGV[10], '{"id":"' .. id .. '","type":"patient_status_changed","ts":"' .. ARGV[7] ..
           '","data":' .. payload .. '}')
return {'ok', current, tostring(version), id, new_room}
"""


# The board in one script, so that the day's entries and the stream's newest id are one instant (as a MULTI
# gave) in one command (a MULTI's extra replies cost the read path more than the script does). KEYS[1] the
# day's index, KEYS[2] agent_updates; ARGV: the SORT's GET clauses. Returns {flat SORT rows, newest id}.
_BOARD_LUA = """
local rows = redis.call('SORT', KEYS[1], 'BY', 'nosort', unpack(ARGV))
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
return {rows, newest[1] and newest[1][1] or '0-0'}
"""
# Sent by SHA-1 with a plain EVALSHA on the read's pipeline, not as a registered Script: redis-py precedes a
# pipeline holding a Script with a SCRIPT EXISTS round trip, the very round trip this read saves.
_BOARD_SHA = hashlib.sha1(_BOARD_LUA.encode()).hexdigest()  # noqa: S324 (Redis names scripts by their SHA-1)


@functools.lru_cache(maxsize=64)
def _board_args(date: str) -> tuple[str, ...]:
    """The board script's keys and SORT clauses for one day (the same for every read of that day)."""
    pattern = keys.patient("*", date)
    gets = ["#", *(f"{pattern}->{field}" for field in BOARD_FIELDS)]
    return (keys.patients_index(date), keys.AGENT_UPDATES, *(part for get in gets for part in ("GET", get)))


class PatientNotFound(LookupError):
    """No flow entry for that patient on that day."""


class StatusConflict(Exception):
    """The change was refused: ``reason`` is ``stale_version`` or ``transition_not_allowed``."""

    def __init__(self, reason: str, *, current: str, version: int, requested: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.current = current
        self.version = version
        self.requested = requested

    @property
    def allowed(self) -> list[str]:
        """The states the patient may move to from where they are now."""
        return flow.allowed_next(self.current) if flow.is_state(self.current) else []


@dataclass(frozen=True)
class StatusChanged:
    """An accepted change, as announced."""

    date: str
    hpid: str
    status: str
    previous: str
    version: int
    room: str
    event_id: str


@dataclass(frozen=True)
class Board:
    """One consistent read of a day: its entries and the id of the newest event at that moment."""

    rows: list[dict[str, Any]]
    last_event_id: str


class PatientFlow:
    """Reads the day's board and applies the clinic's status changes."""

    def __init__(self, client: redis.Redis, cipher: PhiCipher, *, sender: str, maxlen: int) -> None:
        self._redis = client
        self._cipher = cipher
        self._sender = sender
        self._maxlen = maxlen
        self._change = client.register_script(_CHANGE_STATUS_LUA)
        self._next = json.dumps({state: flow.allowed_next(state) for state in flow.STATES})
        self._stamps = json.dumps(flow.TIMESTAMP_FIELDS)

    def change_status(
        self,
        date: str,
        hpid: str,
        status: str,
        *,
        room: str | None = None,
        expected_version: int | None = None,
    ) -> StatusChanged:
        """Move one patient to ``status`` (and ``room``, if given); raise when refused."""
        outcome, previous, version, event_id, new_room = self._change(
            keys=[keys.patient(hpid, date), keys.AGENT_UPDATES],
            args=[
                status,
                room or "",
                "1" if room is not None else "0",
                "" if expected_version is None else str(expected_version),
                self._next,
                self._stamps,
                utc_now_iso(),
                self._maxlen,
                self._sender,
                keys.events_channel(self._redis),
                date,
                hpid,
            ],
        )
        if outcome == "not_found":
            raise PatientNotFound(hpid)
        if outcome != "ok":
            reason = "stale_version" if outcome == "stale" else "transition_not_allowed"
            raise StatusConflict(reason, current=previous, version=int(version), requested=status)
        return StatusChanged(date, hpid, status, previous, int(version), new_room, event_id)

    def board(
        self, date: str, now: datetime | None = None, also: Callable[[Pipeline], None] | None = None
    ) -> Board:
        """The day's flow entries, PHI opened, ordered by appointment time, and the newest event's id.

        One script, one round trip: ``SORT patients:{date} BY nosort GET # GET patient:*:{date}->field …``
        reads the index and every entry's fields together, and ``XREVRANGE agent_updates + - COUNT 1`` the
        stream's last id at that same instant (a script runs alone, as a MULTI did). A client that subscribes
        with ``since`` = that id gets every change after this snapshot: none missed, none it already has.
        ``also`` may queue commands of its own on the same pipeline first (the API's audit record).
        """
        args = _board_args(date)
        pipe = self._redis.pipeline(transaction=False)
        if also is not None:
            also(pipe)
        pipe.evalsha(_BOARD_SHA, 2, *args)
        try:
            flat, newest = pipe.execute()[-1]
        except NoScriptError:  # a server that does not know the script yet (new, restarted): send it once
            flat, newest = self._redis.eval(_BOARD_LUA, 2, *args)
        width = 1 + len(BOARD_FIELDS)
        moment = now or datetime.now(UTC)
        open_phi = self._cipher.opener()
        found = (_row(date, flat[i : i + width], moment, open_phi) for i in range(0, len(flat), width))
        rows = [row for row in found if row is not None]
        rows.sort(key=lambda row: (row["appointment_time"], row["hpid"]))
        return Board(rows, str(newest))


def _row(date: str, values: Sequence[str | None], now: datetime, open_phi: Opener) -> dict[str, Any] | None:
    # One pass over the SORT row, unpacked by position ("#", then BOARD_FIELDS' order): the board builds
    # 40 of these per read, and the dict-of-fields version of this was a fifth of the read's CPU.
    (hpid, name, dob, appointment_time, provider, location, reason, room, status, status_source, version,
     checkin, with_doctor, completed, updated_at, details, conflict) = values  # fmt: skip
    if not hpid or status is None:  # indexed, but the entry has expired (no status)
        return None
    return {
        "hpid": hpid,
        "date": date,
        "name": open_patient(open_phi, hpid, date, "name", name) or "",
        "dob": open_patient(open_phi, hpid, date, "dob", dob) or None,
        "appointment_time": appointment_time or "",
        "provider": provider or "",
        "location": location or "",
        "reason": open_patient(open_phi, hpid, date, "reason", reason) or "",
        "room": room or "",
        "status": status,
        "status_source": status_source or "",
        "version": int(version or 0),
        # One list per state, shared by the rows in that state (serialised, never changed).
        "allowed_next": _ALLOWED_NEXT.get(status, []),
        "checkin_time": checkin or None,
        "with_doctor_time": with_doctor or None,
        "completed_time": completed or None,
        "wait_seconds": _wait(checkin, with_doctor, completed, now) if checkin else None,
        "updated_at": updated_at or None,
        "details": details or "pending",
        # What Tebra says of a visit the clinic has under way (moved, cancelled, deleted), until the clinic's
        # next change to the entry: docs/board.md.
        "tebra_conflict": orjson.loads(conflict) if conflict else None,
    }


def wait_seconds(entry: dict[str, str], now: datetime) -> int | None:
    """Seconds from check-in to the next stage reached (with the doctor, else completed), else to ``now``.

    None before check-in. A patient who left without a with-doctor time waited until completion.
    """
    return _wait(entry.get("checkin_time"), entry.get("with_doctor_time"), entry.get("completed_time"), now)


def _wait(
    checkin_time: str | None, with_doctor_time: str | None, completed_time: str | None, now: datetime
) -> int | None:
    checkin = _parse(checkin_time)
    if checkin is None:
        return None
    until = _parse(with_doctor_time) or _parse(completed_time) or now
    return max(0, int((until - checkin).total_seconds()))


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
