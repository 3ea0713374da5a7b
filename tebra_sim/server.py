"""The WSGI application and the threaded werkzeug server that carries it.

Routes: ``GET /KareoServices.svc?wsdl`` (the simulator's own WSDL, soap:address pointing back at the host the
client used), ``POST /KareoServices.svc`` (SOAP 1.1), ``/_sim/…`` (the JSON admin API).
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
from collections.abc import Iterable
from types import FrameType
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from tebra_sim import admin, endpoint
from tebra_sim.options import SimOptions
from tebra_sim.schema import PLACEHOLDER_ADDRESS, WSDL_PATH
from tebra_sim.simulation import Simulation

SERVICE_PATH = "/KareoServices.svc"
log = logging.getLogger("tebra_sim")


@functools.cache
def _wsdl_template() -> str:
    return WSDL_PATH.read_text(encoding="utf-8")


def wsdl_for(base_url: str) -> bytes:
    """The WSDL with its soap:address on ``base_url`` (scheme and host the client reached us on)."""
    return _wsdl_template().replace(PLACEHOLDER_ADDRESS, base_url.rstrip("/") + SERVICE_PATH).encode("utf-8")


class SimulatorApp:
    """A plain WSGI callable; werkzeug's Request/Response without Flask's routing (three routes)."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        if request.path.startswith("/_sim/") or request.path == "/_sim":
            return admin.handle(self.sim, request)
        if request.path.lower() != SERVICE_PATH.lower():
            return Response("Not Found", status=404, mimetype="text/plain")
        if request.method == "GET":
            if "wsdl" in request.args or "singleWsdl" in request.args:
                return Response(wsdl_for(request.host_url), mimetype="text/xml")
            return Response(
                "Tebra simulator: GET ?wsdl for the WSDL, POST SOAP 1.1 here.", mimetype="text/plain"
            )
        if request.method != "POST":
            return Response("Method Not Allowed", status=405)
        answer = endpoint.timed(self.sim, request.get_data(), request.headers.get("SOAPAction"))
        return Response(answer.body, status=answer.status, content_type="text/xml; charset=utf-8")


class KeepAliveHandler(WSGIRequestHandler):
    """HTTP/1.1, so a client keeps its connection between calls, as it does with Tebra's own front end.

    werkzeug's default (HTTP/1.0) closes every connection: each call paid a TCP connect and a new server
    thread, a millisecond the sync benchmarks charged to our side (docs/benchmarks.md).
    """

    protocol_version = "HTTP/1.1"


def serve(options: SimOptions) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting, release held calls and close the socket."""
    sim = Simulation.create(options)
    server = make_server(
        options.host, options.port, SimulatorApp(sim), threaded=True, request_handler=KeepAliveHandler
    )
    # werkzeug logs each request with its path; our own line per call says more and nothing else is needed.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=server.serve_forever, name="tebra-sim-http", daemon=True)
    thread.start()
    log.info(
        "tebra_sim listening on http://%s:%d%s (seed %d, %d appointments/day, throttle %s)",
        options.host,
        server.server_port,
        SERVICE_PATH,
        options.seed,
        options.appointments_per_day,
        "on" if options.throttle else "off",
    )
    while not stop.wait(0.2):  # wake up regularly: a signal only runs its handler between bytecodes
        if not thread.is_alive():
            break
    sim.stopping.set()
    server.shutdown()
    server.server_close()
    log.info("tebra_sim stopped")
