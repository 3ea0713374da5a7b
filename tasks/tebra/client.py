"""The zeep client for Tebra: built on first use, once per process, dropped after a fork.

The WSDL is multi-part (the binding lives in an imported tempuri document), so the service proxy is built
from the port's binding rather than with ``create_service`` (docs/tebra.md, "Transport and messages"). The
address is
``TEBRA_ENDPOINT_URL`` when set, else the WSDL's ``soap:address``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import requests
from lxml import etree
from zeep import Client
from zeep import exceptions as zeep_exc
from zeep.cache import InMemoryCache
from zeep.proxy import ServiceProxy
from zeep.transports import Transport

from config.settings import Settings

SCHEMA_NS = "http://www.kareo.com/api/schemas/"
SERVICE_NAME = "KareoServices"
PORT_NAME = "BasicHttpBinding_KareoServices"
CLIENT_VERSION = "clinic-relay/0.1"

# The raw body of the last response each thread received. Only the classifier reads it (to find the
# throttle text in a body zeep could not parse); it may hold PHI, so it is never logged and is
# overwritten by the next call.
_last_response = threading.local()


class RecordingTransport(Transport):
    """A zeep transport that keeps the last response body of the calling thread for :mod:`errors`."""

    def post(self, address: str, message: Any, headers: Any) -> requests.Response:
        _last_response.status = None
        _last_response.body = b""
        response: requests.Response = super().post(address, message, headers)
        _last_response.status = response.status_code
        _last_response.body = response.content or b""
        return response


def last_response() -> tuple[int | None, bytes]:
    """The HTTP status and raw body of this thread's last Tebra response (``(None, b"")`` if none)."""
    return getattr(_last_response, "status", None), getattr(_last_response, "body", b"")


@dataclass(frozen=True)
class TebraClient:
    """What one process needs to call Tebra: the zeep client, the bound service and the type factory."""

    zeep: Client
    service: Any  # zeep's ServiceProxy: operations are attributes, so typing it buys nothing
    types: Any  # client.type_factory(SCHEMA_NS)
    address: str
    pid: int
    key: tuple[object, ...] = ()


_lock = threading.Lock()
_client: TebraClient | None = None

# What loading the WSDL raises when Tebra cannot give it: no connection, an HTTP error, a page that is not a
# WSDL (a maintenance page), a document zeep cannot bind. The gateway turns each into an upstream failure.
WSDL_FAILURES: tuple[type[BaseException], ...] = (
    requests.RequestException,
    zeep_exc.Error,
    etree.XMLSyntaxError,
    OSError,
    KeyError,
)


def build_client(settings: Settings) -> TebraClient:
    """Load the WSDL and bind the service (network I/O when the WSDL is remote and not cached)."""
    transport = RecordingTransport(
        cache=InMemoryCache(timeout=settings.tebra_wsdl_cache_s),
        timeout=settings.tebra_connect_timeout_s,
        operation_timeout=settings.tebra_operation_timeout_s,
    )
    client = Client(settings.tebra_wsdl_url, transport=transport)
    port = client.wsdl.services[SERVICE_NAME].ports[PORT_NAME]
    address = settings.tebra_endpoint_url or port.binding_options["address"]
    # The environment's proxy settings are read once, here, not by requests on every call (it walks the whole
    # environment and looks for ~/.netrc each time: a tenth of a sync's HTTP cost). No auth comes from netrc:
    # Tebra's credentials travel in the body.
    transport.session.proxies.update(requests.utils.get_environ_proxies(address))
    transport.session.trust_env = False
    service = ServiceProxy(client, port.binding, address=address)
    return TebraClient(
        zeep=client,
        service=service,
        types=client.type_factory(SCHEMA_NS),
        address=address,
        pid=os.getpid(),
        key=_client_key(settings),
    )


def _client_key(settings: Settings) -> tuple[object, ...]:
    """The settings a built client depends on (credentials are not among them: they travel per call)."""
    return (
        settings.tebra_wsdl_url,
        settings.tebra_endpoint_url,
        settings.tebra_connect_timeout_s,
        settings.tebra_operation_timeout_s,
        settings.tebra_wsdl_cache_s,
    )


def get_client(settings: Settings) -> TebraClient:
    """This process's client, built on first use (rebuilt after a fork or when its settings change)."""
    global _client
    key = _client_key(settings)
    current = _client
    if current is not None and current.pid == os.getpid() and current.key == key:
        return current
    with _lock:
        if _client is None or _client.pid != os.getpid() or _client.key != key:
            _client = build_client(settings)
        return _client


def reset() -> None:
    """Drop this process's client (call from ``worker_process_init``: a forked child must not share it)."""
    global _client
    with _lock:
        _client = None


def request_header(settings: Settings, types: Any) -> Any:
    """The credentials block that travels inside the body (Tebra has no header or HTTP auth)."""
    return types.RequestHeader(
        ClientVersion=CLIENT_VERSION,
        CustomerKey=settings.tebra_customer_key,
        Password=settings.tebra_password,
        User=settings.tebra_user,
    )
