"""A stand-in for Auth0's JWKS endpoint: a real HTTP server on loopback serving real RS256 public keys.

with JwksServer() as server:
    key = server.add_key()              # a fresh 2048-bit RSA key, its public half published
    server.url                          # http://127.0.0.1:<port>/.well-known/jwks.json
    server.requests                     # how many times the JWKS was fetched
    server.set_keys([other])            # rotate: publish exactly these keys
    server.issuer                       # http://127.0.0.1:<port>: its discovery document names the JWKS
    server.hold()                       # JWKS requests wait (a slow provider) until server.release()
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from joserfc.jwk import RSAKey

PATH = "/.well-known/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"


def new_key() -> RSAKey:
    """A fresh RSA key whose kid is its thumbprint (as Auth0 names its keys by a stable id)."""
    return RSAKey.generate_key(2048, auto_kid=True)


class JwksServer:
    """A threaded HTTP server publishing a mutable set of public keys and counting fetches."""

    def __init__(self) -> None:
        self._keys: list[RSAKey] = []
        self._lock = threading.Lock()
        self.requests = 0
        self.failing = False  # answer 503 instead of the set (Auth0 down)
        self.discovery_issuer: str | None = None  # the issuer the discovery document names (None: its own)
        self._open = threading.Event()
        self._open.set()
        self.waiting = threading.Event()  # set when a JWKS request is being held
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == DISCOVERY_PATH:
                    self._send(server.discovery())
                    return
                if not server._open.is_set():
                    server.waiting.set()
                    server._open.wait(30)
                with server._lock:
                    server.requests += 1
                    body = json.dumps(server.document()).encode()
                    failing = server.failing
                if self.path != PATH or failing:
                    self.send_response(404 if self.path != PATH else 503)
                    self.end_headers()
                    return
                self._send(body)

            def _send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.issuer = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self.url = self.issuer + PATH
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def document(self) -> dict[str, Any]:
        return {"keys": [{**key.as_dict(private=False), "use": "sig", "alg": "RS256"} for key in self._keys]}

    def discovery(self) -> bytes:
        """An OpenID discovery document naming this server's JWKS (and endpoints nobody calls here)."""
        document = {
            "issuer": self.discovery_issuer or self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/oauth/token",
            "jwks_uri": self.url,
            "end_session_endpoint": f"{self.issuer}/logout",
            "code_challenge_methods_supported": ["S256"],
        }
        return json.dumps(document).encode()

    def hold(self) -> None:
        """Keep JWKS requests waiting (a provider that accepted the connection and is slow to answer)."""
        self.waiting.clear()
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def add_key(self) -> RSAKey:
        key = new_key()
        with self._lock:
            self._keys.append(key)
        return key

    def set_keys(self, keys: list[RSAKey]) -> None:
        with self._lock:
            self._keys = list(keys)

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
        self._httpd.shutdown()
        self._httpd.server_close()
