"""API reads from the Redis cache under load: requests per second and p95 of ``GET /api/v1/appointments`` and
``GET /api/v1/patients``, beside a bare Flask route in the same server (the floor).

    .venv/bin/python -m bench.api_reads --clients 4 --seconds 8

The API runs under gunicorn with its own config (app/gunicorn_conf.py: one gthread process) serving
``bench.apps:bench_app()``: the real app (JWT auth in development mode, rate limit with a huge bucket, audit,
request log, metrics, headers) plus ``GET /bench/bare``, which answers a small success envelope and does
nothing else. The day read is filled by a real sync first (40 appointments). The load generator is pure
Python: ``--clients`` processes, each one kept-alive ``http.client`` connection sending requests back to back
(closed loop) with a dev bearer token, all starting at the same instant; every request's latency is kept.
The load generator shares the machine's cores with the server, for the floor as for the routes.

Goal (issue 8): each route's req/s ≥ 50 % of the bare route's.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.apps import BARE_PATH
from bench.common import BIN, ROOT, TOKEN_VARIABLE, percentiles
from bench.stack import Stack, bench_stack, machine, monday_weeks_ago, write_result
from bench.throughput import enqueue_syncs, wait_synced

GOAL_RATIO = 0.50
DAY = monday_weeks_ago(4)  # a Monday: 40 appointments, within the year around today the API takes


def run_client(port: int, path: str, start_at: float, seconds: float) -> None:
    """One closed-loop client: requests from ``start_at`` for ``seconds``; prints count and latencies."""
    headers = {"Authorization": f"Bearer {os.environ[TOKEN_VARIABLE]}"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers=headers)  # connect and warm before the clock
    conn.getresponse().read()
    while time.time() < start_at:
        time.sleep(0.001)
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds
    while True:
        started = time.perf_counter()
        if started >= end:
            break
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            errors += 1
        latencies.append((time.perf_counter() - started) * 1000)
    conn.close()
    print(json.dumps({"count": len(latencies), "errors": errors, "latencies": latencies}), flush=True)


def load(stack: Stack, path: str, clients: int, seconds: float) -> dict[str, Any]:
    start_at = time.time() + 1.0
    env = {**os.environ, TOKEN_VARIABLE: stack.token()}
    procs = [
        subprocess.Popen(
            [
                *(str(BIN / "python"), "-m", "bench.api_reads", "--role", "client"),
                *("--port", str(stack.api_port), "--path", path),
                *("--start-at", str(start_at), "--seconds", str(seconds)),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    latencies: list[float] = []
    count = errors = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 60)
        data = json.loads(out.strip().splitlines()[-1])
        count += data["count"]
        errors += data["errors"]
        latencies += data["latencies"]
    stats = percentiles(latencies)
    return {
        "path": path,
        "requests": count,
        "errors": errors,
        "per_s": round(count / seconds, 1),
        **{key: round(value, 2) for key, value in stats.items()},
    }


def _probe(stack: Stack, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", stack.api_port, timeout=10)
    conn.request("GET", path, headers={"Authorization": f"Bearer {stack.token()}"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status


def measure(clients: int, seconds: float) -> dict[str, Any]:
    with bench_stack("api-reads") as stack:
        stack.start_worker(1)
        stack.start_api()
        # Fill the day through the real path: a sync of DAY (appointments and the patient-flow board).
        enqueue_syncs(stack, [DAY])
        wait_synced(stack, [DAY], timeout=60)
        stack.stop_worker()
        routes = {
            "bare": BARE_PATH,
            "appointments": f"/api/v1/appointments?start={DAY}&end={DAY}",
            "patients": f"/api/v1/patients?date={DAY}",
        }
        notes: dict[str, str] = {}
        for name in ("appointments", "patients"):
            status = _probe(stack, routes[name])
            if status != 200:
                notes[name] = f"skipped: answered {status} (route absent or failing)"
                del routes[name]
        load_before = machine()["loadavg"]
        rows: dict[str, Any] = {}
        for name, path in routes.items():
            rows[name] = load(stack, path, clients, seconds)
        rows["bare_again"] = load(stack, routes["bare"], clients, seconds)  # the floor drifts on a shared box
        return {
            "config": {
                "clients": clients,
                "seconds": seconds,
                "appointments": 40,
                "server": "gunicorn gthread x1",
            },
            "machine": {**machine(), "loadavg_before": load_before},
            "unit": "ms",
            "results": rows,
            "notes": notes,
        }


def report(result: dict[str, Any]) -> dict[str, Any]:
    rows = result["results"]
    floor = max(rows["bare"]["per_s"], rows["bare_again"]["per_s"])
    result["goal"] = {"ratio_to_bare": GOAL_RATIO}
    met = True
    print(f"{'route':14} {'req/s':>8} {'p50':>7} {'p95':>7} {'p99':>7} {'errors':>6} {'vs bare':>8}")
    for name, row in rows.items():
        ratio = row["per_s"] / floor
        row["ratio"] = round(ratio, 3)
        if name not in ("bare", "bare_again"):
            met = met and ratio >= GOAL_RATIO and row["errors"] == 0
        print(
            f"{name:14} {row['per_s']:>8} {row['p50']:>7} {row['p95']:>7} {row['p99']:>7}"
            f" {row['errors']:>6} {ratio:>8.0%}"
        )
    for name, note in result["notes"].items():
        print(f"{name}: {note}")
    print(
        f"goal: each route ≥ {GOAL_RATIO:.0%} of the bare route's req/s"
        f" ({'met' if met else 'MISSED'}); load {result['machine']['loadavg']}",
        flush=True,
    )
    result["met"] = met
    write_result("api_reads", result)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--clients", type=int, default=4, help="load-generator processes (one connection each)"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="measured time per route")
    parser.add_argument("--role", choices=["client"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "client":
        run_client(args.port, args.path, args.start_at, args.seconds)
        return None
    return report(measure(args.clients, args.seconds))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
