"""``make check-tebra``: what a clinic runs before its first sync, and what ``POST /api/v1/ops/tebra
{"action": "check"}`` runs on a worker.

Four steps, each one call, stopping at the first that fails for good:

1. GetPractices: the configured practice exists, exactly (Tebra matches ``PracticeName`` whole and answers
   nothing otherwise), and this account sees it; if not, the names it does see.
2. GetThrottles: the account's live limits, stored for the shared throttle.
3. GetProviders: how many, by type.
4. GetAppointments for today: how many (placeholder rows and rows set aside counted apart).

The report holds names, counts and limits, never patient data; it is kept for ``GET /api/v1/ops/tebra``.
The check calls Tebra even while the credentials latch is set (it is how an operator tries fixed
credentials before resuming); it honours the breaker and the throttle.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import redis

from config import Settings, load_settings
from tasks import events, tebra_check
from tasks.breaker.errors import BreakerOpen
from tasks.tebra.errors import TebraError
from tasks.tebra.gateway import TebraGateway
from tasks.tebra.mapping import clinic_day_bounds

STEP_OK = "ok"
STEP_FAILED = "failed"


def run_check(gateway: TebraGateway, settings: Settings, *, now: datetime | None = None) -> dict[str, Any]:
    """The four steps against ``gateway``; the report (``ok`` True only when every step passed)."""
    tz = ZoneInfo(settings.clinic_tz)
    moment = now or datetime.now(tz)
    wanted = settings.tebra_practice_name
    report: dict[str, Any] = {
        "ok": False,
        "checked_at": events.utc_now_iso(),
        "practice_name": wanted,
        "user": settings.tebra_user,
        "steps": [],
        "problem": None,
    }
    steps: list[dict[str, Any]] = report["steps"]
    try:
        practices = gateway.get_practices(every=True)
        steps.append(_practice_step(wanted, practices))
        if steps[-1]["status"] == STEP_FAILED:
            report["problem"] = steps[-1]["detail"]
            return report
        throttles = gateway.refresh_throttles()
        steps.append(_step("throttles", f"{len(throttles)} live limits stored", limits_ms=throttles))
        providers = gateway.get_providers()
        by_type = dict(Counter(str(p.get("type") or "unknown") for p in providers))
        steps.append(_step("providers", f"{len(providers)} providers", total=len(providers), by_type=by_type))
        start, end = clinic_day_bounds(moment.date(), tz)
        rows = gateway.get_appointments(start, end)
        steps.append(
            _step(
                "appointments",
                f"{len(rows)} appointments today ({moment.date().isoformat()})",
                date=moment.date().isoformat(),
                count=len(rows),
                placeholders=getattr(rows, "placeholders", 0),
                rejected=len(getattr(rows, "rejected", ())),
            )
        )
    except (TebraError, BreakerOpen) as exc:
        step = ("practice", "throttles", "providers", "appointments")[len(steps)]
        steps.append({"name": step, "status": STEP_FAILED, "detail": str(exc)[:300]})
        report["problem"] = f"{step}: {str(exc)[:300]}"
        return report
    report["ok"] = True
    return report


def _step(name: str, detail: str, **values: Any) -> dict[str, Any]:
    return {"name": name, "status": STEP_OK, "detail": detail, **values}


def _practice_step(wanted: str, practices: Sequence[dict[str, Any]]) -> dict[str, Any]:
    names = sorted(str(p["name"]) for p in practices if p.get("name"))
    exact = [p for p in practices if p.get("name") == wanted]
    if exact:
        found = exact[0]
        return _step(
            "practice", f'"{wanted}" (id {found["id"]}): this account is authorized for it', id=found["id"]
        )
    close = [name for name in names if name.strip().casefold() == wanted.strip().casefold()]
    seen = ", ".join(f'"{name}"' for name in names) or "none"
    if close:
        detail = (
            f'TEBRA_PRACTICE_NAME "{wanted}" is not exactly Tebra\'s "{close[0]}" (Tebra matches it whole)'
        )
    else:
        detail = f'TEBRA_PRACTICE_NAME "{wanted}" is not a practice this account sees; it sees: {seen}'
    return {"name": "practice", "status": STEP_FAILED, "detail": detail, "names": names}


def render(report: dict[str, Any]) -> str:
    """The report as a few readable lines, the verdict last."""
    lines = [f'Tebra check of "{report["practice_name"]}" as {report["user"]} at {report["checked_at"]}']
    for step in report["steps"]:
        lines.append(f"  {step['name']:<13}{step['status'].upper():<7}{step['detail']}")
    lines.append("PASS" if report["ok"] else f"FAIL: {report['problem']}")
    return "\n".join(lines)


def check_gateway(settings: Settings) -> tuple[TebraGateway, Any]:
    """A gateway for the check on this process's runtime (breaker, throttle, metrics), without the latch's
    guard; and the runtime's Redis client, where the report is kept."""
    from tasks.runtime import Runtime  # the worker's clients; imported here: the module stays light
    from tasks.tebra.credentials import with_credentials

    runtime = Runtime(settings)

    def guard(operation: str) -> None:
        runtime.breaker.guard(operation)

    gateway = TebraGateway(
        with_credentials(settings),
        runtime.redis,
        before_call=guard,
        on_call=runtime.breaker.record,
        on_refused=runtime.credentials.refused,
    )
    return gateway, runtime.redis


def check_and_keep(settings: Settings) -> dict[str, Any]:
    """Run the check and keep its report (the worker's task and the command line both do this)."""
    gateway, client = check_gateway(settings)
    report = run_check(gateway, settings)
    try:
        tebra_check.store_report(client, report)
    except redis.RedisError as exc:  # the verdict still stands; only GET /ops/tebra will not show it
        report["kept"] = f"not kept ({type(exc).__name__})"
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tasks.tebra.check``: print the report; exit 0 when Tebra is ready for a first sync."""
    parser = argparse.ArgumentParser(prog="make check-tebra", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    report = check_and_keep(load_settings())
    print(render(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
