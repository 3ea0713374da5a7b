"""Tebra's per-account, per-endpoint call intervals and the message a violation carries.

The facts are in docs/tebra.md, "Tebra's API as it behaves" ("Rate limits").
"""

from __future__ import annotations

import threading
import time

# Published minimum gap between two calls of one endpoint by one account, in ms (Tebra's guide, April 2025).
# GetThrottles answers with this table. Keyed by the WSDL's operation names, the same table as the gateway's
# (a unit test checks both).
INTERVALS_MS: dict[str, int] = {
    "GetPatient": 250,
    "GetAppointment": 500,
    "GetEncounterDetails": 500,
    "GetPractices": 500,
    "GetProcedureCodes": 500,
    "GetProviders": 500,
    "GetServiceLocations": 500,
    "CreateAppointment": 500,
    "CreateEncounter": 500,
    "CreatePatient": 500,
    "CreatePayment": 500,
    "UpdateAppointment": 500,
    "UpdateEncounterStatus": 500,
    "DeleteAppointment": 500,
    "GetAppointments": 1000,
    "GetCharges": 1000,
    "GetExternalVendors": 1000,
    "GetPatients": 1000,
    "GetPayments": 1000,
    "GetTransactions": 1000,
    "UpdatePatient": 1000,
    "GetAllPatients": 5000,
    "GetThrottles": 5000,
}


def violation_message(operation: str, interval_ms: int) -> str:
    return (
        f"429: {operation} endpoint requested more than allowed over time interval {interval_ms} "
        "milliseconds. Please wait to try again."
    )


class Throttle:
    """Admit a call when at least the interval has passed since the previous *accepted* call.

    Counted per (customer key, operation). Rejected calls do not restart the window (unknown in Tebra; the
    kinder choice).
    """

    def __init__(self, intervals_ms: dict[str, int] | None = None) -> None:
        self.intervals_ms = dict(INTERVALS_MS if intervals_ms is None else intervals_ms)
        self._lock = threading.Lock()
        self._last_accepted: dict[tuple[str, str], float] = {}

    def admit(self, customer_key: str, operation: str, now: float | None = None) -> int | None:
        """None when admitted (and recorded); otherwise the interval in ms that the call violated."""
        interval = self.intervals_ms.get(operation)
        moment = time.monotonic() if now is None else now
        with self._lock:
            last = self._last_accepted.get((customer_key, operation))
            if interval is not None and last is not None and (moment - last) * 1000 < interval:
                return interval
            self._last_accepted[(customer_key, operation)] = moment
        return None

    def reset(self) -> None:
        with self._lock:
            self._last_accepted.clear()
