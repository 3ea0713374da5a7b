"""The fast reader and zeep read the simulator's replies into the same appointments, day after day."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from config import load_settings
from tasks.tebra import caller
from tasks.tebra.gateway import TebraGateway

TZ = ZoneInfo("America/Chicago")


@pytest.mark.parametrize("day", ["2026-11-30", "2026-03-08", "2026-11-01", "2027-01-04"])
def test_fast_and_zeep_readers_agree(simulator: Any, monkeypatch: pytest.MonkeyPatch, day: str) -> None:
    settings = load_settings(
        {"APP_ENV": "test", "TEBRA_WSDL_URL": simulator.wsdl_url, "TEBRA_THROTTLE_ENABLED": "false"}
    )
    gateway = TebraGateway(settings, None)
    start = datetime.fromisoformat(day).replace(tzinfo=TZ)
    end = datetime.combine(start.date() + timedelta(days=1), start.time(), tzinfo=TZ)
    fast = gateway.get_appointments(start, end)
    monkeypatch.setattr(caller, "FAST_REPLIES", {})
    slow = gateway.get_appointments(start, end)
    assert fast == slow
    assert len(fast) == len(simulator.appointments(day))
