"""Entry point: ``python -m tebra_sim [--host] [--port] [--seed] [--appointments-per-day] [--latency-ms]
[--no-throttle]``."""

from __future__ import annotations

import logging
import sys

from tebra_sim.options import parse_options
from tebra_sim.server import serve


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    serve(parse_options())


if __name__ == "__main__":
    main()
