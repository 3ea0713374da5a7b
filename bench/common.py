"""Shared pieces of the benchmarks: processes, percentiles, file limits, the app they run."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results"
# The benchmarks open up to thousands of sockets from one address as one user: lift the /ws caps (settings
# WS_MAX_*, docs/realtime.md), which exist to stop exactly that on a real deployment.
UNCAPPED_SOCKETS = {
    "WS_MAX_PER_IP": "100000",
    "WS_MAX_PER_USER": "100000",
    "WS_MAX_UNAUTHENTICATED": "100000",
}
TOKEN_VARIABLE = "BENCH_TOKEN"  # how client processes get the development token their sockets present


def raise_file_limit(wanted: int) -> int:
    """Raise the open-files soft limit towards ``wanted`` (up to the hard limit); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max of ``values`` (nearest rank), in the values' unit."""
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]

    return {"p50": rank(50), "p95": rank(95), "p99": rank(99), "max": ordered[-1]}


def dev_token(env: dict[str, str]) -> str:
    """A development bearer token with every scope, for an API started with ``env`` (development signing: the
    key at DEV_KEY_PATH, which the API creates or loads at start). Sockets present it like a browser would."""
    from app import auth, devkey, devtoken
    from config import load_settings

    settings = load_settings({**os.environ, **env})
    key = devkey.load_or_create(str(ROOT / settings.dev_key_path))
    return devtoken.mint(key, audience=settings.auth0_audience, scopes=auth.ALL_SCOPES, subject="bench|relay")


def start_api(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """gunicorn serving the API (app/wsgi.py) with its config on ``port``; returns once /health answers."""
    import requests

    proc = subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            "-c",
            "app/gunicorn_conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "app.wsgi:app",
        ],
        cwd=ROOT,
        env={**os.environ, **UNCAPPED_SOCKETS, **env},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"api exited: {log.read_text()[-2000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError("api did not start")
