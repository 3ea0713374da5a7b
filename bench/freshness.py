"""Freshness: how long a change made in Tebra takes to reach a board nobody touches, and what the watch costs.

    .venv/bin/python -m bench.freshness --intervals 30 300 --edits 20 10 --spread 300 600

For each poll interval, a stack of its own (bench/stack.py: a Redis server, the simulator with Tebra's
throttle on and a lognormal latency of median 0.8 s, p95 2.5 s, a prefork worker, beat, the API) runs with
the watch at that interval (inside and outside clinic hours alike, so the figure does not depend on the hour
it runs at). Edits (status changes of single visits on the horizon's weekdays) are made in the simulator at
uniformly random moments over ``spread`` seconds; the clock runs from the moment the simulator answered the
edit to the moment its ``patient_status_changed`` arrives on a WebSocket subscribed to those days. Nothing
else asks for a sync. The intervals run side by side (each stack mostly waits).

Cost: the simulator's count of GetAppointments over the run, per practice-hour, beside what asking for each
day of the same horizon at the same interval would cost ((SYNC_HORIZON_DAYS + 1) x 3600 / interval).

Goals (issue 13): p95 ≤ interval + 5 s; at the default interval (300 s), ≤ 15 GetAppointments per
practice-hour. Results: a table and bench/results/freshness.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bench.common import BIN, percentiles
from bench.stack import Stack, bench_stack, machine, verdict, write_result
from tests.support.processes import spawn, stop

HORIZON_DAYS = 14
SLACK_S = 5.0
DEFAULT_INTERVAL_S = 300
GOAL_CALLS_PER_HOUR = 15


def horizon_weekdays(tz: str) -> list[str]:
    today = datetime.now(ZoneInfo(tz)).date()
    days = [today + timedelta(days=n) for n in range(1, HORIZON_DAYS + 1)]
    return [day.isoformat() for day in days if day.weekday() < 5]


def single_visits(stack: Stack, days: list[str]) -> list[dict[str, Any]]:
    """Appointments of patients with no other appointment that day, in a state a status edit can move."""
    found = []
    for day in days:
        rows = stack.sim.appointments(day)
        per_patient: dict[Any, int] = {}
        for row in rows:
            per_patient[row["patient_id"]] = per_patient.get(row["patient_id"], 0) + 1
        found += [
            r for r in rows if per_patient[r["patient_id"]] == 1 and r["status"] in {"Scheduled", "Confirmed"}
        ]
    return found


class Listener(threading.Thread):
    """One socket subscribed to the days' patient topics; notes when each (hpid, status) first arrives."""

    def __init__(self, stack: Stack, days: list[str]) -> None:
        super().__init__(daemon=True)
        from websockets.sync.client import connect

        token = stack.token()
        self.ws = connect(
            f"ws://127.0.0.1:{stack.api_port}/ws",
            additional_headers={"Authorization": f"Bearer {token}"},
            compression=None,
            open_timeout=10,
        ).__enter__()  # closed in close()
        self.ws.send(json.dumps({"type": "subscribe", "topics": [f"patients:{day}" for day in days]}))
        while json.loads(self.ws.recv(timeout=10)).get("type") != "subscribed":
            pass
        self.seen: dict[tuple[str, str], float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                message = json.loads(self.ws.recv(timeout=0.5))
            except TimeoutError:
                continue
            except Exception:
                return
            if message.get("type") == "patient_status_changed":
                data = message["data"]
                self.seen.setdefault((data["hpid"], data["status"]), time.time())

    def close(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        self.ws.close()


def run_interval(interval_s: int, edits: int, spread_s: float, seed: int) -> dict[str, Any]:
    """One stack at one interval: the edits' freshness and the watch's calls."""
    from tasks.phi import hpid

    env = {
        "TEBRA_POLL_INTERVAL_S": str(interval_s),
        "TEBRA_POLL_INTERVAL_OFF_HOURS_S": str(interval_s),
        "SYNC_HORIZON_DAYS": str(HORIZON_DAYS),
        "TEBRA_THROTTLE_ENABLED": "true",
        "PATIENT_DETAILS_ENABLED": "false",
    }
    rng = random.Random(seed)
    with bench_stack(f"freshness-{interval_s}", env=env) as stack:
        stack.sim.set_faults(throttle=True, latency_distribution={"median_ms": 800, "p95_ms": 2500})
        stack.start_worker(2)
        stack.start_api()
        settings = stack.settings()
        beat_log = stack.folder / "beat.log"
        beat = spawn(
            [str(BIN / "celery"), "-A", "workers.celery_app", "beat", "--loglevel=WARNING",
             f"--schedule={stack.folder / 'beat-schedule'}"],
            stack.env,
            beat_log,
        )  # fmt: skip
        try:
            client = stack.redis()
            deadline = time.monotonic() + 120
            while not client.hget("watch:tebra", "last_full_started_at"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the watch never polled; see {beat_log}")
                time.sleep(0.5)
            days = horizon_weekdays(settings.clinic_tz)
            targets = rng.sample(single_visits(stack, days), edits)
            moments = sorted(rng.uniform(0, spread_s) for _ in targets)
            listener = Listener(stack, days)
            listener.start()
            calls_before = stack.sim.stats()["calls"].get("GetAppointments", 0)
            started = time.monotonic()
            made: list[tuple[str, str, float]] = []
            for target, moment in zip(targets, moments, strict=True):
                time.sleep(max(0.0, started + moment - time.monotonic()))
                new = "Confirmed" if target["status"] == "Scheduled" else "Scheduled"
                stack.sim.edit_appointment("status", id=target["id"], status=new)
                made.append(
                    (hpid(str(target["patient_id"]), settings.phi_hmac_key), new.lower(), time.time())
                )
            wait_until = time.monotonic() + interval_s + 60
            while time.monotonic() < wait_until and any((h, s) not in listener.seen for h, s, _ in made):
                time.sleep(0.5)
            elapsed_h = (time.monotonic() - started) / 3600
            calls = stack.sim.stats()["calls"].get("GetAppointments", 0) - calls_before
            listener.close()
        finally:
            stop(beat)
        latencies = [listener.seen[(h, s)] - at for h, s, at in made if (h, s) in listener.seen]
        missed = len(made) - len(latencies)
        per_hour = calls / elapsed_h if elapsed_h else float("nan")
        return {
            "interval_s": interval_s,
            "edits": len(made),
            "missed": missed,
            "freshness_s": {k: round(v, 2) for k, v in percentiles(latencies).items()},
            "get_appointments": calls,
            "hours": round(elapsed_h, 3),
            "calls_per_hour": round(per_hour, 1),
            "day_by_day_calls_per_hour": (HORIZON_DAYS + 1) * 3600 / interval_s,
            "goal_p95_s": interval_s + SLACK_S,
        }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--intervals", type=int, nargs="+", default=[30, DEFAULT_INTERVAL_S])
    parser.add_argument("--edits", type=int, nargs="+", default=[20, 10])
    parser.add_argument("--spread", type=float, nargs="+", default=[300, 600])
    args = parser.parse_args(argv)
    load_before = machine()["loadavg"]
    results: dict[int, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def one(index: int, interval: int) -> None:
        try:
            results[interval] = run_interval(interval, args.edits[index], args.spread[index], seed=index + 1)
        except BaseException as exc:  # reported below: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i, interval)) for i, interval in enumerate(args.intervals)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    rows = [results[interval] for interval in args.intervals]
    print(f"{'interval':>9} {'edits':>6} {'missed':>6} {'p50 s':>7} {'p95 s':>7} {'goal':>7} "
          f"{'calls/h':>8} {'day-by-day':>10}")  # fmt: skip
    for row in rows:
        fresh = row["freshness_s"]
        mark = verdict(fresh["p95"], row["goal_p95_s"], higher_is_better=False)
        print(f"{row['interval_s']:>9} {row['edits']:>6} {row['missed']:>6} {fresh['p50']:>7} "
              f"{fresh['p95']:>7} {row['goal_p95_s']:>7} {row['calls_per_hour']:>8} "
              f"{row['day_by_day_calls_per_hour']:>10.0f}  {mark}")  # fmt: skip
    document = {
        "config": vars(args),
        "machine": {**machine(), "loadavg_before": load_before},
        "results": rows,
    }
    write_result("freshness", document)
    return document


if __name__ == "__main__":
    main(sys.argv[1:])
