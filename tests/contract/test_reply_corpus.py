"""Awkward replies (tests/contract/replies/), each read two ways: by zeep on Tebra's real WSDL (how the
gateway read GetProviders and GetPatient before), and by the gateway as it reads them now (the tolerant
reader, with zeep behind it for anything that is not a plain success), served over real HTTP.

The table below is the whole list of differences: where zeep in strict mode fails a reply that WCF itself
would read (an unknown member, members out of order, a member in a foreign namespace), the gateway reads the
rows and counts the unknown member; everywhere else both end the same (docs/tebra.md, "How replies are read").
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
import zeep
from zeep.helpers import serialize_object

from config import load_settings
from tasks.tebra import client as tebra_client
from tasks.tebra import mapping
from tasks.tebra.errors import TebraError, classify
from tasks.tebra.gateway import AppointmentRows, TebraGateway
from tasks.tebra.response import check_response
from tests.support.real_tebra import real_wsdl_path

REPLIES = Path(__file__).parent / "replies"
TZ = ZoneInfo("America/Chicago")

# file: (operation, what zeep on the real WSDL ends with, what the gateway ends with). An outcome is the
# class of the classified error, or the ids of the rows read (with, for the gateway, the unknown members
# counted and the placeholder rows seen).
CORPUS: dict[str, tuple[str, Any, Any]] = {
    "unknown_member.xml": ("GetProviders", "TebraUpstreamError", (["11"], ["Xsd7PreferredPronoun"], 0)),
    "reordered_members.xml": ("GetProviders", "TebraUpstreamError", (["11"], [], 0)),
    "foreign_namespace.xml": ("GetProviders", "TebraUpstreamError", (["11"], ["NewID"], 0)),
    "boolean_forms.xml": ("GetAppointments", "TebraBusinessError", "TebraBusinessError"),
    "nil_everywhere.xml": ("GetAppointments", [], ([], [], 0)),
    "placeholder_row.xml": ("GetAppointments", [], ([], [], 1)),
    "html_page.html": ("GetAppointments", "TebraUpstreamError", "TebraUpstreamError"),
    "truncated.xml": ("GetAppointments", "TebraUpstreamError", "TebraUpstreamError"),
}


def test_the_table_names_every_reply_in_the_corpus() -> None:
    assert sorted(CORPUS) == sorted(path.name for path in REPLIES.iterdir())


class _Canned(BaseHTTPRequestHandler):
    """Answers every POST with the corpus file the server is set to, as a 200 text/xml reply."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = self.server.body  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/xml; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def canned() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    server.body = b""  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def gateway(canned: ThreadingHTTPServer, real_client: zeep.Client) -> tuple[TebraGateway, list[Any]]:
    """The gateway on the real WSDL, addressed to the canned server; it notes the unknown members."""
    settings = load_settings(
        {
            "APP_ENV": "test",
            "TEBRA_WSDL_URL": str(real_wsdl_path()),
            "TEBRA_ENDPOINT_URL": f"http://127.0.0.1:{canned.server_port}/KareoServices.svc",
            "TEBRA_THROTTLE_ENABLED": "false",
        }
    )
    unknown: list[Any] = []
    built = tebra_client.build_client(settings)
    return TebraGateway(settings, client=built, on_unknown=lambda op, member: unknown.append(member)), unknown


def through_zeep(real_client: zeep.Client, operation: str, body: bytes) -> Any:
    binding = real_client.wsdl.services["KareoServices"].ports["BasicHttpBinding_KareoServices"].binding
    http = requests.Response()
    http.status_code, http._content, http.encoding = 200, body, "utf-8"
    http.headers["Content-Type"] = "text/xml; charset=utf-8"
    try:
        result = binding.process_reply(real_client, binding.get(operation), http)
        check_response(operation, result)
    except (zeep.exceptions.Error, TebraError) as exc:
        return type(classify(exc, operation, raw_body=body, status_code=200)).__name__
    plain = serialize_object(result, dict)
    array, item = (
        ("Providers", "ProviderData") if operation == "GetProviders" else ("Appointments", "AppointmentData")
    )
    rows = ((plain.get(array) or {}).get(item)) or []
    if operation == "GetProviders":
        return [p["id"] for p in (mapping.map_provider(row) for row in rows) if p]
    return [a["id"] for a in mapping.map_appointments(rows, TZ)]


def through_gateway(gateway: TebraGateway, unknown: list[Any], operation: str) -> Any:
    unknown.clear()
    try:
        if operation == "GetProviders":
            ids = [p["id"] for p in gateway.get_providers()]
            return ids, sorted(set(unknown)), 0
        start = datetime(2026, 9, 23, tzinfo=TZ)
        rows: AppointmentRows = gateway.get_appointments(start, start.replace(day=24))
        return [a["id"] for a in rows], sorted(set(unknown)), rows.placeholders
    except TebraError as exc:
        return type(exc).__name__


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_reply_through_zeep_and_through_the_gateway(
    name: str,
    canned: ThreadingHTTPServer,
    real_client: zeep.Client,
    gateway: tuple[TebraGateway, list[Any]],
) -> None:
    operation, zeep_outcome, our_outcome = CORPUS[name]
    body = (REPLIES / name).read_bytes()
    canned.body = body  # type: ignore[attr-defined]
    assert through_zeep(real_client, operation, body) == zeep_outcome
    assert through_gateway(*gateway, operation) == our_outcome
