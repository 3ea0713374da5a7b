"""Every benchmark in sequence (``make bench``): each prints its table; then one summary of every figure
beside its floor and goal, also written to bench/results/summary.json.

    .venv/bin/python -m bench                 # all of them, sized to finish in under 10 minutes
    .venv/bin/python -m bench relay sync      # some: relay, sync, throughput, reads, memory, freshness

Each benchmark can also run alone with its own options (``python -m bench.sync_latency --help``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.common import RESULTS
from bench.stack import machine, write_result


def _relay() -> dict[str, Any]:
    from bench import relay_latency

    relay_latency.main(["--sockets", "10", "100", "1000", "--rate", "50", "--seconds", "10"])
    return dict(json.loads((RESULTS / "relay_latency.json").read_text()))


def _sync() -> dict[str, Any]:
    from bench import sync_latency

    return sync_latency.main(["--syncs", "200", "--floor", "400"])


def _throughput() -> dict[str, Any]:
    from bench import throughput

    return throughput.main(["--dates", "1000", "--throttled-dates", "20"])


def _reads() -> dict[str, Any]:
    from bench import api_reads

    result = api_reads.main(["--clients", "4", "--seconds", "8"])
    assert result is not None
    return result


def _memory() -> dict[str, Any]:
    from bench import memory

    result = memory.main(["--sockets", "1000", "--syncs", "10000", "--every", "1000"])
    assert result is not None
    return result


def _freshness() -> dict[str, Any]:
    from bench import freshness

    return freshness.main([])


BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {
    "relay": _relay,
    "sync": _sync,
    "throughput": _throughput,
    "reads": _reads,
    "memory": _memory,
    "freshness": _freshness,
}


def figures(name: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    """The benchmark's headline figures: what was measured, its floor, the goal and whether it was met."""
    if name == "relay":
        rows = []
        for row in result["results"]:
            relay, floor = row["relay"], row["floor"]
            goal = "≤ 20 ms" if row["sockets"] == 1000 else "-"
            met = relay["p95"] <= 20 if row["sockets"] == 1000 else None
            rows.append(
                {
                    "figure": f"relay p95 @{row['sockets']} sockets (ms)",
                    "value": relay["p95"],
                    "floor": floor["p95"],
                    "goal": goal,
                    "met": met,
                }
            )
        return rows
    if name == "sync":
        return [
            {
                "figure": "sync → schedule_synced p95 (ms)",
                "value": result["sync"]["p95"],
                "floor": result["floor"]["p95"],
                "goal": f"≤ 30 ms and ≤ 5x floor (is {result['ratio_p95']}x)",
                "met": result["met"],
            }
        ]
    if name == "throughput":
        floor = max(result["floor"]["per_s"], result["floor_after"]["per_s"])
        rows = [
            {
                "figure": "syncs/s, 1,000 queued dates",
                "value": result["syncs"]["per_s"],
                "floor": floor,
                "goal": f"≥ 40% of floor (is {result['ratio']:.0%})",
                "met": result["ratio"] >= 0.40,
            }
        ]
        throttle = result.get("throttled")
        if throttle:
            rows.append(
                {
                    "figure": f"GetAppointments/s, throttle on ({throttle['violations']} violations)",
                    "value": throttle["achieved_per_s"],
                    "floor": throttle["allowed_per_s"],
                    "goal": f"≥ {result['goal']['throttled_ratio']:.0%} of allowed, 0 violations",
                    "met": throttle["ratio"] >= result["goal"]["throttled_ratio"]
                    and throttle["violations"] == 0,
                }
            )
        return rows
    if name == "reads":
        rows = result["results"]
        floor = max(rows["bare"]["per_s"], rows["bare_again"]["per_s"])
        return [
            {
                "figure": f"GET {route} req/s (p95 {rows[route]['p95']} ms)",
                "value": rows[route]["per_s"],
                "floor": floor,
                "goal": f"≥ 50% of bare (is {rows[route]['ratio']:.0%})",
                "met": rows[route]["ratio"] >= 0.50,
            }
            for route in ("appointments", "patients")
            if route in rows
        ]
    if name == "freshness":
        out = []
        for row in result["results"]:
            p95, goal = row["freshness_s"]["p95"], row["goal_p95_s"]
            out.append(
                {
                    "figure": f"edit → socket p95 @{row['interval_s']} s poll (s; {row['missed']} missed)",
                    "value": p95,
                    "floor": row["interval_s"],
                    "goal": f"≤ interval + 5 s ({goal})",
                    "met": p95 <= goal and row["missed"] == 0,
                }
            )
            if row["interval_s"] == 300:
                out.append(
                    {
                        "figure": "GetAppointments per practice-hour @300 s",
                        "value": row["calls_per_hour"],
                        "floor": row["day_by_day_calls_per_hour"],
                        "goal": "≤ 15 (floor: day by day)",
                        "met": row["calls_per_hour"] <= 15,
                    }
                )
        return out
    if name == "memory":
        out = []
        api, worker = result.get("api"), result.get("worker")
        if api:
            out.append(
                {
                    "figure": f"API RSS with {api['sockets']} sockets (MB)",
                    "value": round(api["open_kb"] / 1024, 1),
                    "floor": round(api["idle_kb"] / 1024, 1),
                    "goal": f"- ({api['per_socket_kb']} kB a socket)",
                    "met": None,
                }
            )
        if worker:
            out.append(
                {
                    "figure": f"worker pool RSS after {worker['syncs']} syncs (MB)",
                    "value": round(worker["samples"][-1]["pool_kb"] / 1024, 1),
                    "floor": round(worker["samples"][1]["pool_kb"] / 1024, 1),
                    "goal": f"< 5% growth after warm-up (is {worker['growth_after_warmup']:+.1%})",
                    "met": worker["growth_after_warmup"] < 0.05,
                }
            )
        return out
    return []


def main(argv: list[str] | None = None) -> int:
    chosen = list(sys.argv[1:] if argv is None else argv) or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    started = time.monotonic()
    before = machine()
    summary: list[dict[str, Any]] = []
    for name in chosen:
        print(f"\n=== {name} ===", flush=True)
        t0 = time.monotonic()
        result = BENCHMARKS[name]()
        for row in figures(name, result):
            summary.append({"benchmark": name, **row, "loadavg": machine()["loadavg"]})
        print(f"({name}: {time.monotonic() - t0:.0f} s)", flush=True)
    after = machine()
    print(
        f"\n=== summary ({time.monotonic() - started:.0f} s; load before {before['loadavg']}, after"
        f" {after['loadavg']}; {after['nproc']} cores, {after['mem_gb']} GB; a shared machine) ==="
    )
    print(f"{'figure':58} {'value':>9} {'floor':>9}  goal")
    for row in summary:
        mark = {True: "met", False: "MISSED", None: ""}[row["met"]]
        print(f"{row['figure']:58} {row['value']:>9} {row['floor']:>9}  {row['goal']} {mark}")
    write_result(
        "summary",
        {
            "machine": {"before": before, "after": after},
            "seconds": round(time.monotonic() - started),
            "figures": summary,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
