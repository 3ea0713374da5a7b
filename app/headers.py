"""Security headers on every response, and CORS for the origins in CORS_ORIGINS only.

- HSTS for a year: once a browser has seen the API over HTTPS it never tries plain HTTP (the header is
  ignored on plain-HTTP development servers, so it is always sent).
- A CSP that allows nothing: the API serves JSON, and a page that needs more sets its own header.
- ``Cache-Control: no-store`` on every /api response unless a view chose otherwise: schedules and patients
  are PHI and must not sit in a browser or proxy cache.
- CORS: an exact allow-list. A listed ``Origin`` gets itself back in ``Access-Control-Allow-Origin`` (never
  ``*``: the API takes bearer tokens), preflights are answered for the methods and headers the API uses;
  any other origin gets no CORS headers and the browser blocks the call. No extension needed for that much.
"""

from __future__ import annotations

from flask import Flask, Response, request

from config import Settings

SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
CORS_METHODS = "GET, POST, PATCH, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, X-Request-ID"
CORS_EXPOSE = "Retry-After, Location, X-Request-ID, WWW-Authenticate"
CORS_MAX_AGE_S = "600"


def allowed_origins(settings: Settings) -> frozenset[str]:
    """CORS_ORIGINS as a set of exact origins (scheme://host[:port], no trailing slash)."""
    return frozenset(item.strip().rstrip("/") for item in settings.cors_origins.split(",") if item.strip())


def init_app(app: Flask, settings: Settings) -> None:
    origins = allowed_origins(settings)

    def add_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        origin = request.headers.get("Origin")
        response.vary.add("Origin")
        if origin and origin in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
                response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
                response.headers["Access-Control-Max-Age"] = CORS_MAX_AGE_S
        return response

    app.after_request(add_headers)
