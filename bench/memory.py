"""Memory: RSS of the API with N WebSockets open, and of a worker across many syncs (no growth after warm-up).

    .venv/bin/python -m bench.memory --sockets 1000 --syncs 10000 --every 1000

API: gunicorn (app/gunicorn_conf.py, one gthread process) serving ``bench.apps:bench_app()``; VmRSS of
its worker process (/proc/<pid>/status) idle, with ``--sockets`` sockets open and subscribed (a client
process of raw sockets, bench/relay_latency.py's), and after they closed. The floor is the idle API.

Worker: one prefork worker with one pool process (so one process runs every sync), real syncs against the
simulator at zero latency with ``--appointments`` appointments a day (5 by default: the per-sync work that
could leak, zeep call, mapping, sealing, writes, events, is all exercised, while 10,000 syncs take minutes
rather than the half hour 40-row days would), each of a distinct weekday (every one a full sync). VmRSS of
the pool process and of the worker's main process every ``--every`` syncs. "No growth after warm-up": the
pool process's RSS at the end minus at the first sample, beside the goal of < 5 % (and a few MB).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import BIN, ROOT, TOKEN_VARIABLE
from bench.stack import (
    Stack,
    bench_stack,
    children_of,
    machine,
    rss_kb,
    weekdays,
    write_result,
)
from bench.throughput import enqueue_syncs, wait_drained, wait_synced

GROWTH_GOAL = 0.05  # the pool process may grow by less than this fraction after the first sample


def hold_sockets(port: int, n: int) -> None:
    """Client role: open ``n`` sockets subscribed to a day, say READY, hold them until stdin closes."""
    from bench.common import raise_file_limit
    from bench.relay_latency import Receiver, TimedSelector

    raise_file_limit(n + 1000)
    selector = TimedSelector()
    token = os.environ[TOKEN_VARIABLE]
    receivers = [Receiver("ws", port, selector, 0, [], token) for _ in range(n)]
    print("READY", flush=True)
    sys.stdin.read()
    for receiver in receivers:
        receiver.sock.close()


def api_memory(stack: Stack, sockets: int) -> dict[str, Any]:
    stack.start_api()
    pid = stack.api_worker_pid()
    time.sleep(1)
    idle = rss_kb(pid)
    client = subprocess.Popen(
        [
            *(str(BIN / "python"), "-m", "bench.memory", "--role", "sockets"),
            *("--port", str(stack.api_port), "--sockets", str(sockets)),
        ],
        cwd=ROOT,
        env={**os.environ, TOKEN_VARIABLE: stack.token()},  # the sockets sign in as a browser does
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdout is not None and client.stdin is not None
    line = client.stdout.readline()
    if line.strip() != "READY":
        raise RuntimeError(f"socket client failed: {line!r}")
    time.sleep(2)
    held = rss_kb(pid)
    client.stdin.close()
    client.wait(60)
    time.sleep(2)
    after = rss_kb(pid)
    stack.stop_api()
    return {
        "sockets": sockets,
        "idle_kb": idle,
        "open_kb": held,
        "after_close_kb": after,
        "per_socket_kb": round((held - idle) / sockets, 1) if sockets else 0,
    }


def worker_memory(stack: Stack, syncs: int, every: int) -> dict[str, Any]:
    main = stack.start_worker(1, queues="sync")
    kids = children_of(main.pid)
    if len(kids) != 1:
        raise RuntimeError(f"expected one pool process, found {kids}")
    child = kids[0]
    days = weekdays("2000-01-03", syncs)
    samples = [{"syncs": 0, "pool_kb": rss_kb(child), "main_kb": rss_kb(main.pid), "s": 0.0}]
    started = time.perf_counter()
    for batch in range(0, syncs, every):
        enqueue_syncs(stack, days[batch : batch + every])
        wait_synced(stack, days[batch : batch + every], timeout=every * 2)
        wait_drained(stack, timeout=60)
        if children_of(main.pid) != [child]:
            raise RuntimeError("the pool process was replaced: RSS samples would not be comparable")
        samples.append(
            {
                "syncs": min(batch + every, syncs),
                "pool_kb": rss_kb(child),
                "main_kb": rss_kb(main.pid),
                "s": round(time.perf_counter() - started, 1),
            }
        )
        print(f"  {samples[-1]}", flush=True)
    stack.stop_worker()
    first, last = samples[1], samples[-1]  # warm-up: the first batch loads zeep, the WSDL, the scripts
    growth = (last["pool_kb"] - first["pool_kb"]) / first["pool_kb"] if first["pool_kb"] else 0.0
    return {
        "syncs": syncs,
        "every": every,
        "samples": samples,
        "growth_after_warmup_kb": last["pool_kb"] - first["pool_kb"],
        "growth_after_warmup": round(growth, 4),
        "main_growth_after_warmup_kb": last["main_kb"] - first["main_kb"],
        "syncs_per_s": round(syncs / (time.perf_counter() - started), 1),
    }


def measure(sockets: int, syncs: int, every: int, appointments: int) -> dict[str, Any]:
    with bench_stack("memory", appointments_per_day=appointments) as stack:
        load_before = machine()["loadavg"]
        api = api_memory(stack, sockets) if sockets else None
        worker = worker_memory(stack, syncs, every) if syncs else None
        return {
            "config": {
                "sockets": sockets,
                "syncs": syncs,
                "every": every,
                "appointments_per_day": appointments,
            },
            "machine": {**machine(), "loadavg_before": load_before},
            "unit": "kB",
            "api": api,
            "worker": worker,
        }


def report(result: dict[str, Any]) -> dict[str, Any]:
    met = True
    api = result["api"]
    if api:
        print(
            f"API worker RSS: idle {api['idle_kb'] / 1024:.1f} MB (floor), {api['sockets']} sockets open"
            f" {api['open_kb'] / 1024:.1f} MB (+{api['per_socket_kb']} kB a socket),"
            f" after they closed {api['after_close_kb'] / 1024:.1f} MB"
        )
    worker = result["worker"]
    if worker:
        print(f"{'syncs':>8} {'pool MB':>8} {'main MB':>8} {'s':>6}")
        for sample in worker["samples"]:
            print(
                f"{sample['syncs']:>8} {sample['pool_kb'] / 1024:>8.1f} {sample['main_kb'] / 1024:>8.1f}"
                f" {sample['s']:>6}"
            )
        ok = worker["growth_after_warmup"] < GROWTH_GOAL
        met = met and ok
        print(
            f"pool process after warm-up: {worker['growth_after_warmup_kb']:+} kB"
            f" ({worker['growth_after_warmup']:+.1%}) over {worker['syncs']} syncs; goal < {GROWTH_GOAL:.0%}"
            f" ({'met' if ok else 'MISSED'}); {worker['syncs_per_s']} syncs/s"
        )
        print(f"worker main process after warm-up: {worker['main_growth_after_warmup_kb']:+} kB")
    print(f"load {result['machine']['loadavg']}", flush=True)
    result["goal"] = {"worker_growth_after_warmup": GROWTH_GOAL}
    result["met"] = met
    write_result("memory", result)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=1000, help="open WebSockets (0: skip the API)")
    parser.add_argument("--syncs", type=int, default=10000, help="syncs through one worker (0: skip)")
    parser.add_argument("--every", type=int, default=1000, help="sample RSS every this many syncs")
    parser.add_argument("--appointments", type=int, default=5, help="appointments a day in the simulator")
    parser.add_argument("--role", choices=["sockets"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "sockets":
        hold_sockets(args.port, args.sockets)
        return None
    return report(measure(args.sockets, args.syncs, args.every, args.appointments))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
