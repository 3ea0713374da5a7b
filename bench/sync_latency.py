"""A sync end to end: POST /api/v1/schedule/sync → ``schedule_synced`` on a WebSocket, beside a bare Celery
round trip (``diagnostics.noop`` apply_async → result) on the same broker as the floor.

    .venv/bin/python -m bench.sync_latency --syncs 50

The stack is the benchmark's own (bench/stack.py): a Redis server, the simulator at zero latency with the
throttle off and 40 appointments a day, a prefork worker (2 processes) and the API under gunicorn. One
socket (a dev bearer token in the handshake) subscribes to each day before its sync is requested; the
clock runs from just before the POST is written to the moment ``schedule_synced`` for that day is read.
Each sync is of a different weekday, so every one is a full sync (GetAppointments, 40 rows mapped, sealed
and written). Syncs run one at a time (latency, not throughput). Patient-detail lookups are off: they are
queued after the day is announced and never hold it back.

Goal (issue 8): p95 ≤ 30 ms and ≤ 5x the floor's p95. Results: a table and bench/results/sync_latency.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import percentiles
from bench.stack import Stack, bench_stack, machine, monday_weeks_ago, verdict, weekdays, write_result
from tasks import names

GOAL_P95_MS = 30.0
GOAL_RATIO = 5.0
# Weekdays from here on (about 44 weeks of them by default), all within the year around today the API takes.
FIRST_DAY = monday_weeks_ago(46)


def noop_floor(stack: Stack, n: int, warmup: int) -> list[float]:
    """Round trips of ``diagnostics.noop``: apply_async → result, one at a time, in ms."""
    app = stack.celery()
    samples: list[float] = []
    for i in range(warmup + n):
        started = time.perf_counter()
        app.send_task(names.NOOP, args=[i], queue="sync").get(timeout=30)
        if i >= warmup:
            samples.append((time.perf_counter() - started) * 1000)
    return samples


class SyncClient:
    """Requests syncs over a kept-alive HTTP connection and waits for their events on one WebSocket."""

    def __init__(self, stack: Stack) -> None:
        from websockets.sync.client import connect

        token = stack.token()
        self.headers = {"Authorization": f"Bearer {token}", "Content-Length": "0"}
        self.http = http.client.HTTPConnection("127.0.0.1", stack.api_port, timeout=30)
        self.ws = connect(
            f"ws://127.0.0.1:{stack.api_port}/ws",
            additional_headers={"Authorization": f"Bearer {token}"},
            compression=None,
            open_timeout=10,
        ).__enter__()  # closed in close()

    def _until(self, kind: str, date: str | None = None, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if message.get("type") == kind and (date is None or message.get("data", {}).get("date") == date):
                return dict(message)

    def sync(self, date: str) -> tuple[float, float, dict[str, Any]]:
        """(ms to the 202, ms to schedule_synced, the event's data)."""
        self.ws.send(json.dumps({"type": "subscribe", "topics": [f"schedule:{date}"]}))
        self._until("subscribed")
        started = time.perf_counter()
        self.http.request("POST", f"/api/v1/schedule/sync?date={date}", headers=self.headers)
        response = self.http.getresponse()
        body = response.read()
        accepted = time.perf_counter()
        if response.status != 202:
            raise RuntimeError(f"sync of {date}: {response.status} {body[:300]!r}")
        event = self._until("schedule_synced", date)
        done = time.perf_counter()
        self.ws.send(json.dumps({"type": "unsubscribe", "topics": [f"schedule:{date}"]}))
        self._until("unsubscribed")
        return (accepted - started) * 1000, (done - started) * 1000, event["data"]

    def close(self) -> None:
        self.ws.close()
        self.http.close()


def measure(syncs: int, warmup: int, floor_n: int, concurrency: int) -> dict[str, Any]:
    with bench_stack("sync") as stack:
        stack.start_worker(concurrency)
        stack.start_api()
        load_before = machine()["loadavg"]
        floor = noop_floor(stack, floor_n, warmup=10)
        client = SyncClient(stack)
        days = weekdays(FIRST_DAY, warmup + syncs)
        posted: list[float] = []
        end_to_end: list[float] = []
        task_ms: list[float] = []
        rows = set()
        try:
            for i, day in enumerate(days):
                post_ms, total_ms, data = client.sync(day)
                rows.add(sum(data["counts"].values()) if isinstance(data.get("counts"), dict) else None)
                if i >= warmup:
                    posted.append(post_ms)
                    end_to_end.append(total_ms)
                    task_ms.append(float(data.get("duration_ms", 0)))
        finally:
            client.close()
        floor_after = noop_floor(
            stack, floor_n // 2, warmup=0
        )  # the floor again: the machine may have shifted
        sample_counts = stack.sim.stats()["accepted"].get("GetAppointments", 0)
        return {
            "config": {
                "syncs": syncs,
                "warmup": warmup,
                "appointments_per_day": 40,
                "worker_concurrency": concurrency,
                "simulator_latency_ms": 0,
                "throttle": False,
                "patient_details": False,
            },
            "machine": {**machine(), "loadavg_before": load_before},
            "unit": "ms",
            "sync": {k: round(v, 2) for k, v in percentiles(end_to_end).items()},
            "post_202": {k: round(v, 2) for k, v in percentiles(posted).items()},
            "task_duration_ms": {k: round(v, 2) for k, v in percentiles(task_ms).items()},
            "floor": {k: round(v, 2) for k, v in percentiles(floor + floor_after).items()},
            "get_appointments_calls": sample_counts,
        }


def report(result: dict[str, Any]) -> dict[str, Any]:
    sync, floor = result["sync"], result["floor"]
    ratio = sync["p95"] / floor["p95"] if floor["p95"] else float("inf")
    result["goal"] = {"p95_ms": GOAL_P95_MS, "ratio_to_floor": GOAL_RATIO}
    result["ratio_p95"] = round(ratio, 2)
    result["met"] = sync["p95"] <= GOAL_P95_MS and ratio <= GOAL_RATIO
    print(f"{'':24} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}   (ms)")
    for label, key in (
        ("sync → schedule_synced", "sync"),
        ("  of which POST → 202", "post_202"),
        ("  task's own duration", "task_duration_ms"),
        ("floor: noop round trip", "floor"),
    ):
        row = result[key]
        print(f"{label:24} {row['p50']:>8} {row['p95']:>8} {row['p99']:>8} {row['max']:>8}")
    print(
        f"p95 {sync['p95']} ms = {ratio:.1f}x floor; goal ≤ {GOAL_P95_MS:.0f} ms"
        f" ({verdict(sync['p95'], GOAL_P95_MS, False)}) and ≤ {GOAL_RATIO:.0f}x floor"
        f" ({verdict(ratio, GOAL_RATIO, False)}); load {result['machine']['loadavg']}",
        flush=True,
    )
    write_result("sync_latency", result)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--syncs", type=int, default=200, help="measured syncs (each a different weekday)")
    parser.add_argument("--warmup", type=int, default=6, help="syncs not counted (zeep loads the WSDL)")
    parser.add_argument("--floor", type=int, default=400, help="noop round trips (floor)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    args = parser.parse_args(argv)
    return report(measure(args.syncs, args.warmup, args.floor, args.concurrency))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
