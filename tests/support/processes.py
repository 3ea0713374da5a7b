"""Start and stop the real processes the integration tests talk to (worker, beat, API, Redis)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll ``check`` until true; fail with the process's log if it died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout}s:\n{_tail(log)}")


def _tail(log: Path | None, lines: int = 40) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def spawn(args: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a process in its own session (so a stop reaches its children), output to ``log``."""
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    handle = log.open("ab")
    return subprocess.Popen(
        args, cwd=ROOT, env=full_env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Signal the process group, wait, then kill what is left."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def start_worker(
    env: Mapping[str, str],
    log: Path,
    *,
    name: str,
    concurrency: int = 2,
    queues: str = "sync,details",
    loglevel: str = "INFO",
    heartbeat: bool = True,
    ready: Callable[[], bool] | None = None,
    timeout: float = 60,
) -> subprocess.Popen[bytes]:
    """A real prefork Celery worker (``celery -A workers.celery_app worker``), returned once it is ready.

    Gossip and mingle are off: a test's worker should not wait to meet the others. ``name`` makes its
    hostname unique per test process. Ready means its "ready." log line, unless ``ready`` says otherwise (a
    worker logging at WARNING prints none: the benchmarks ping it). A worker that never gets ready is stopped.
    """
    proc = spawn(
        [
            str(BIN / "celery"),
            "-A",
            "workers.celery_app",
            "worker",
            "--pool=prefork",
            f"--concurrency={concurrency}",
            f"--queues={queues}",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
            *(() if heartbeat else ("--without-heartbeat",)),
            f"--hostname={name}-{os.getpid()}@%h",
        ],
        env,
        log,
    )
    try:
        wait_until(ready or (lambda: "ready." in log.read_text(errors="replace")), timeout, name, proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (gunicorn's worker, Celery's pool), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def start_beat(env: Mapping[str, str], log: Path, schedule: Path) -> subprocess.Popen[bytes]:
    """A real Celery beat (``celery -A workers.celery_app beat``) keeping its schedule in ``schedule``."""
    return spawn(
        [
            str(BIN / "celery"),
            "-A",
            "workers.celery_app",
            "beat",
            "--loglevel=INFO",
            f"--schedule={schedule}",
        ],
        env,
        log,
    )
