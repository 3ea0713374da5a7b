"""A patient leaving a day's board when a read leaves them no appointment there (tasks/sync/reconcile.py
decides who; this decides, at EXEC, what happens to each).

The patient leaves (``patient_removed``) unless the clinic had already moved them past ``confirmed`` locally:
then the entry stays, flagged ``tebra_conflict`` with what Tebra now says (``patient_conflict``), until the
clinic's next change to it. One script per patient, so that the decision reads the entry as it is at EXEC (a
nurse's check-in a moment earlier counts).
"""

from __future__ import annotations

import json
from typing import Any

import redis

from tasks import events, keys
from tasks.patients import flow
from tasks.sync.store import canonical

MOVED = "moved"
DELETED = "deleted"

# KEYS[1] the patient's entry, KEYS[2] the day's index, KEYS[3] agent_updates. ARGV[1] the conflict JSON (what
# Tebra now says), ARGV[2] JSON {state: rank}, ARGV[3] now (ISO UTC, the event's ts), ARGV[4] stream maxlen,
# ARGV[5] sender, ARGV[6] channel, ARGV[7] date, ARGV[8] hpid, ARGV[9] the patient_removed payload. Returns
# gone | kept | conflict | removed. An entry already flagged (or whose flag the clinic resolved) is kept as it
# is: the clinic was told once.
_LEAVE_LUA = (
    events.PUBLISH_LUA_FUNCTION
    + """
local entry = redis.call('HMGET', KEYS[1], 'status', 'status_source', 'tebra_conflict', 'conflict_resolved')
if not entry[1] then
  redis.call('SREM', KEYS[2], ARGV[8])
  return 'gone'
end
local ranks = cjson.decode(ARGV[2])
if entry[2] == 'local' and (ranks[entry[1]] or 0) >= ranks['arrived'] then
  if (entry[3] and entry[3] ~= '') or (entry[4] and entry[4] ~= '') then return 'kept' end
  redis.call('HSET', KEYS[1], 'tebra_conflict', ARGV[1])
  local payload = '{"conflict":' .. ARGV[1] .. ',"date":' .. cjson.encode(ARGV[7]) .. ',"hpid":' ..
    cjson.encode(ARGV[8]) .. ',"status":' .. cjson.encode(entry[1]) .. '}'
  publish_event(KEYS[3], ARGV[4], ARGV[5], ARGV[6], 'patient_conflict', ARGV[3], payload)
  return 'conflict'
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[8])
publish_event(KEYS[3], ARGV[4], ARGV[5], ARGV[6], 'patient_removed', ARGV[3], ARGV[9])
return 'removed'
"""
)
_RANKS = json.dumps(flow.RANKS)


class Departures:
    """Queues patients' departures from a day's board on a reconciliation's transaction."""

    def __init__(self, client: redis.Redis, *, sender: str, maxlen: int) -> None:
        self._leave = client.register_script(_LEAVE_LUA)
        self._channel = keys.events_channel(client)
        self._sender = sender
        self._maxlen = maxlen

    def queue(
        self,
        pipe: Any,
        date: str,
        gone_hpid: str,
        why: dict[str, Any],
        applied: dict[str, tuple[str, dict[str, Any]]],
        now: str,
    ) -> None:
        """Queue on ``pipe`` the departure of ``gone_hpid`` from ``date``'s board (``why``: moved or deleted,
        and the appointment that left), decided by the script at EXEC."""
        reason = str(why["reason"])
        removed: dict[str, Any] = {"date": date, "hpid": gone_hpid, "reason": reason}
        conflict: dict[str, Any] = {"kind": reason}
        landed = applied.get(str(why.get("appointment_id") or ""))
        if reason == MOVED and landed is not None:
            removed["to_date"] = conflict["to_date"] = landed[0]
            tebra_status = landed[1].get("tebra_status")
            if tebra_status:
                conflict["tebra_status"] = str(tebra_status)
        self._leave(
            keys=[keys.patient(gone_hpid, date), keys.patients_index(date), keys.AGENT_UPDATES],
            args=[
                canonical(conflict),
                _RANKS,
                now,
                self._maxlen,
                self._sender,
                self._channel,
                date,
                gone_hpid,
                events.dumps(removed),
            ],
            client=pipe,
        )
