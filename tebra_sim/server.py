"""The WSGI application and the threaded werkzeug server that carries it.

Routes: ``GET /KareoServices.svc?wsdl`` (the simulator's own WSDL, soap:address pointing back at the host the
client used), ``POST /KareoServices.svc`` (SOAP 1.1), ``/_sim/…`` (the JSON admin API).
"""

from __future__ import annotations

import functools
import logging
import queue
import signal
import socket
import struct
import threading
from collections.abc import Iterable
from types import FrameType
from typing import Any

from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import get_input_stream

from tebra_sim import admin, endpoint
from tebra_sim.options import SimOptions
from tebra_sim.schema import PLACEHOLDER_ADDRESS, WSDL_PATH
from tebra_sim.simulation import Simulation

SERVICE_PATH = "/KareoServices.svc"
_SERVICE_PATH = SERVICE_PATH.lower()
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
        if environ["REQUEST_METHOD"] == "POST" and environ.get("PATH_INFO", "").lower() == _SERVICE_PATH:
            return self.soap(environ, start_response)
        request = Request(environ)
        response = self.dispatch(request)
        return response(environ, start_response)

    def soap(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """``POST /KareoServices.svc`` straight from the environ: the bytes dispatch() and werkzeug's
        Response would send (status line, Content-Type, Content-Length, body), without building either
        object for every call (docs/simulator.md)."""
        body = get_input_stream(environ).read()  # what Request.get_data() reads, chunked or not
        answer = endpoint.timed(self.sim, body, environ.get("HTTP_SOAPACTION"))
        if answer.reset:
            _reset(environ)
        start_response(
            f"{answer.status} {HTTP_STATUS_CODES[answer.status].upper()}",
            [("Content-Type", answer.content_type), ("Content-Length", str(len(answer.body)))],
        )
        return [answer.body]

    def dispatch(self, request: Request) -> Response:
        if request.path.startswith("/_sim/") or request.path == "/_sim":
            return admin.handle(self.sim, request)
        if request.path.lower() != SERVICE_PATH.lower():
            return Response("Not Found", status=404, mimetype="text/plain")
        if request.method == "GET":
            if self.sim.faults.switches.wsdl_unavailable:
                return Response(endpoint.MAINTENANCE_PAGE, status=503, mimetype="text/html")
            if "wsdl" in request.args or "singleWsdl" in request.args:
                return Response(wsdl_for(request.host_url), mimetype="text/xml")
            return Response(
                "Tebra simulator: GET ?wsdl for the WSDL, POST SOAP 1.1 here.", mimetype="text/plain"
            )
        return Response("Method Not Allowed", status=405)  # a POST here is answered by soap()


def _reset(environ: dict[str, Any]) -> None:
    """Drop the client's connection with no reply: closed with a zero linger (a TCP reset), and werkzeug told
    the client went away, so it writes nothing and logs no error."""
    connection = environ.get("werkzeug.socket")
    if connection is not None:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.shutdown(socket.SHUT_RDWR)  # the client sees its connection end with no reply at once
    raise ConnectionResetError("connection_reset fault")


class KeepAliveHandler(WSGIRequestHandler):
    """HTTP/1.1 responses, meant to let a client keep its connection between calls.

    With werkzeug 3 that does not happen: its handler sends ``Connection: close`` on every response and
    closes the connection, whatever the protocol (werkzeug/serving.py, "Always close the connection"). So
    each call is still a TCP connect and accept; ReusingThreadsServer at least reuses the thread.
    """

    protocol_version = "HTTP/1.1"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # werkzeug formats a line for every request (path, time stamp, colours) before its logger drops it at
        # the WARNING level serve() sets; endpoint.timed already logs each SOAP call.
        if logging.getLogger("werkzeug").isEnabledFor(logging.INFO):
            super().log_request(code, size)


class ReusingThreadsServer(ThreadedWSGIServer):
    """werkzeug's threaded server, with each connection handed to an idle thread when there is one.

    werkzeug 3 closes every connection after one response (see KeepAliveHandler), so each call came on a new
    connection and its server started a new thread for it: ~0.1 ms of the simulator's CPU per call
    (docs/simulator.md). A connection still never waits for a thread: with none idle a new one starts, as
    before, so held ("hang") calls do not hold up others. A thread idle for ``IDLE_THREAD_S`` ends.
    """

    IDLE_THREAD_S = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connections: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()
        self._idle_lock = threading.Lock()
        self._idle = 0  # threads waiting for a connection that no connection has been promised to

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._idle_lock:
            reuse = self._idle > 0
            if reuse:
                self._idle -= 1
        self._connections.put((request, client_address))
        if not reuse:
            threading.Thread(target=self._serve_connections, name="tebra-sim-conn", daemon=True).start()

    def _serve_connections(self) -> None:
        while True:
            try:
                request, client_address = self._connections.get(timeout=self.IDLE_THREAD_S)
            except queue.Empty:
                with self._idle_lock:
                    if self._idle > 0:  # more threads wait than connections were promised: this one can go
                        self._idle -= 1
                        return
                continue  # every waiting thread is promised a connection that is on its way
            self.process_request_thread(request, client_address)  # handles errors, closes the socket
            with self._idle_lock:
                self._idle += 1


def serve(options: SimOptions) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting, release held calls and close the socket."""
    sim = Simulation.create(options)
    server = ReusingThreadsServer(options.host, options.port, SimulatorApp(sim), KeepAliveHandler)
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
