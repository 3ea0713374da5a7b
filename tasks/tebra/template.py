"""Requests zeep serialises once and the gateway then fills in: a GetAppointments envelope differs from the
last one only in the window's dates, and zeep building it afresh (types, values, the render) was the largest
piece of a sync's own CPU after the reply (docs/benchmarks.md).

A :class:`Template` is zeep's own serialisation of a request whose variable strings are unique marks; its
``fill`` puts the XML-escaped values where the marks were, and a fresh WS-Addressing ``MessageID`` (zeep
writes a new ``urn:uuid:`` into every message; a template must too). Everything else (the addressing header,
the credentials, the field toggles, the practice name, namespaces, the SOAPAction header) is byte for byte
what zeep sent (tests/unit/test_tebra_wire.py compares the two).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from zeep.wsdl.utils import etree_to_string

MESSAGE_ID = "MessageID"
# zeep's WS-Addressing plugin writes <wsa:MessageID>urn:uuid:…</wsa:MessageID> (any prefix).
_MESSAGE_ID = re.compile(rb"(<(?:\w+:)?MessageID>)urn:uuid:[0-9a-f-]{36}(</(?:\w+:)?MessageID>)")


def mark(name: str) -> str:
    """The placeholder of ``name``: plain ASCII letters, which zeep writes as is and nothing else matches."""
    return f"CLINICRELAYMARK{name}KRAMYALERCINILC"


@dataclass(frozen=True)
class Prepared:
    """A request ready to post as is."""

    operation: str
    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Template:
    operation: str
    body: bytes
    headers: Mapping[str, str]
    names: tuple[str, ...]

    def fill(self, values: Mapping[str, str]) -> Prepared:
        """The request with each name's value (XML-escaped) where its mark was."""
        if set(values) != set(self.names):
            raise ValueError(
                f"{self.operation}: values for {sorted(self.names)} expected, got {sorted(values)}"
            )
        body = self.body.replace(mark(MESSAGE_ID).encode(), f"urn:uuid:{uuid.uuid4()}".encode())
        for name in self.names:
            body = body.replace(mark(name).encode(), escape(values[name]).encode())
        return Prepared(self.operation, body, self.headers)


def build(client: Any, operation: str, request: Any, names: tuple[str, ...]) -> Template:
    """Serialise ``request`` (built with ``mark(name)`` for each of ``names``) the way zeep sends it.

    ``client`` is a :class:`tasks.tebra.client.TebraClient`; this goes through the same binding, plugins and
    settings as ``client.service.<operation>(request=…)`` does.
    """
    binding = client.service._binding
    envelope, headers = binding._create(
        operation, (), {"request": request}, client=client.zeep, options=client.service._binding_options
    )
    body = _MESSAGE_ID.sub(
        rb"\g<1>" + mark(MESSAGE_ID).encode() + rb"\g<2>", etree_to_string(envelope), count=1
    )
    for name in names:
        if body.count(mark(name).encode()) != 1:
            raise ValueError(f"{operation}: the mark of {name} is not in the serialised request exactly once")
    return Template(operation, body, dict(headers), names)
