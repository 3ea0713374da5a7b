"""Helpers of the browser tests: the system's Chromium under Playwright, and a clinic weekday to show.

Chromium comes from the system (``apt-get install chromium``, as .ci/run does): no browser download.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

CHROMIUM = shutil.which("chromium")
LAUNCH_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def clinic_weekday(days_ahead: int = 40) -> str:
    """A weekday (the simulated clinic is closed at weekends) some weeks out, clear of other suites' days."""
    day = datetime.now(ZoneInfo("America/Chicago")).date() + timedelta(days=days_ahead)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day.isoformat()
