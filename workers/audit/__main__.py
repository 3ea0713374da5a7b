"""``python -m workers.audit run`` (the writer, until SIGTERM) and ``python -m workers.audit verify FILE``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from config import Settings, load_settings
from tasks.connections import make_redis
from tasks.logs import configure_logging
from workers.audit.chain import verify_file
from workers.audit.writer import AuditWriter

log = logging.getLogger("workers.audit")


def _run(settings: Settings) -> int:
    writer = AuditWriter(
        make_redis(settings),
        settings.audit_log_path,
        settings.audit_signing_key.encode(),
        record_key=settings.audit_record_key.encode(),
        anchor_path=settings.audit_anchor_path or None,
    )
    writer.open()

    def stop(signum: int, _frame: Any) -> None:
        writer.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("audit writer: appending to %s from line %d", writer.path, writer.head.n + 1)
    try:
        writer.run()
    finally:
        writer.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.audit")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="append the audit stream to AUDIT_LOG_PATH until stopped")
    check = commands.add_parser("verify", help="check a log file's signatures, chain and anchor")
    check.add_argument("file")
    check.add_argument("--anchor", help="the anchor file (default: AUDIT_ANCHOR_PATH, else FILE.anchor)")
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.command == "run":
        configure_logging(settings, "audit")  # JSON lines, like every other process
        return _run(settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    anchor = args.anchor or (settings.audit_anchor_path if args.file == settings.audit_log_path else None)
    verdict = verify_file(args.file, settings.audit_signing_key.encode(), anchor or None)
    if verdict.ok:
        print(f"ok: {verdict.lines} lines, signatures and chain intact")
        return 0
    print(f"broken at line {verdict.broken_line}: {verdict.reason}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
