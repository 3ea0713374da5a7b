"""A worker-like process for breaker tests: the real per-process runtime (gateway + shared breaker),
driven by JSON lines on stdin, answering JSON lines on stdout.

    {"op": "call"}                         -> {"result": "ok" | "upstream" | ... | "refused", "state": …}
    {"op": "burst", "n": 67, "at": 1.7e9}  -> waits until unix time ``at``, tries n calls one after another:
                                              {"admitted": k, "refused": m, "results": {...}}

Run as ``python -m tests.support.breaker_caller``; its settings come from the environment, as a worker's do.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from typing import Any

from config import load_settings
from tasks.breaker.errors import BreakerOpen
from tasks.runtime import get_runtime
from tasks.tebra.errors import TebraError


def call_once(runtime: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        runtime.gateway.get_providers()
    except BreakerOpen as exc:
        return {
            "result": "refused",
            "state": exc.state,
            "reason": exc.reason,
            "retry_after_s": exc.retry_after_s,
        }
    except TebraError as exc:
        return {"result": exc.outcome, "seconds": time.perf_counter() - started}
    return {"result": "ok", "seconds": time.perf_counter() - started}


def burst(runtime: Any, n: int, at: float) -> dict[str, Any]:
    time.sleep(max(0.0, at - time.time()))
    results: Counter[str] = Counter(call_once(runtime)["result"] for _ in range(n))
    return {"admitted": n - results["refused"], "refused": results["refused"], "results": dict(results)}


def main() -> int:
    runtime = get_runtime(load_settings())
    _ = runtime.gateway.client  # build the zeep client (reads the WSDL) before the test starts timing
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            break
        if command["op"] == "call":
            answer = call_once(runtime)
        else:
            answer = burst(runtime, int(command["n"]), float(command["at"]))
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
