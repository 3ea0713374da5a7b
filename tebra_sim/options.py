"""The simulator's options: the project's settings, then SIM_* environment variables, then the command
line."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from config import load_settings


@dataclass(frozen=True)
class SimOptions:
    host: str
    port: int
    seed: int
    appointments_per_day: int
    latency_ms: int
    throttle: bool
    # The one account the simulator knows: the project's Tebra credentials, so the defaults work together.
    user: str
    password: str
    customer_key: str
    practice_name: str
    clinic_tz: str
    max_range_days: int = 60
    customer_id: int = 4242


def _flag(raw: str) -> bool:
    return raw.strip().lower() not in {"0", "false", "no", "off", ""}


def parse_options(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> SimOptions:
    env = os.environ if environ is None else environ
    # The simulator is a development and test tool: it runs as development unless told otherwise.
    settings = load_settings({"APP_ENV": "development", **env})
    parser = argparse.ArgumentParser(
        prog="python -m tebra_sim", description="Local Tebra (Kareo) SOAP simulator"
    )
    parser.add_argument("--host", default=settings.sim_host)
    parser.add_argument("--port", type=int, default=settings.sim_port)
    parser.add_argument("--seed", type=int, default=int(env.get("SIM_SEED", "1")))
    parser.add_argument(
        "--appointments-per-day", type=int, default=int(env.get("SIM_APPOINTMENTS_PER_DAY", "40"))
    )
    parser.add_argument("--latency-ms", type=int, default=int(env.get("SIM_LATENCY_MS", "0")))
    parser.add_argument("--max-range-days", type=int, default=int(env.get("SIM_MAX_RANGE_DAYS", "60")))
    parser.add_argument(
        "--no-throttle",
        action="store_true",
        default=not _flag(env.get("SIM_THROTTLE", "1")),
        help="start with the per-endpoint throttle off (SIM_THROTTLE=0 does the same)",
    )
    args = parser.parse_args(argv)
    return SimOptions(
        host=args.host,
        port=args.port,
        seed=args.seed,
        appointments_per_day=max(0, args.appointments_per_day),
        latency_ms=max(0, args.latency_ms),
        throttle=not args.no_throttle,
        user=settings.tebra_user,
        password=settings.tebra_password,
        customer_key=settings.tebra_customer_key,
        practice_name=settings.tebra_practice_name,
        clinic_tz=settings.clinic_tz,
        max_range_days=args.max_range_days,
    )
