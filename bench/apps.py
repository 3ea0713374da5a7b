"""App factories the benchmarks serve under gunicorn (app/gunicorn_conf.py), never used in production.

``bench_app()`` is the real API (create_app: JWT auth in development mode, rate limit, request log, metrics,
security headers) plus one bare route, ``GET /bench/bare``, that answers a small JSON success envelope and
does nothing else. It is the floor of the API-read benchmark: the same server, the same process, the same
per-request hooks, no Redis and no token check.
"""

from __future__ import annotations

from flask import Flask, Response

BARE_PATH = "/bench/bare"


def bench_app() -> Flask:
    from app import create_app
    from app.errors import success

    app = create_app()

    def bare() -> Response:
        return success({"ok": True})

    app.add_url_rule(BARE_PATH, "bench_bare", bare, methods=["GET"])
    return app
