"""The simulator's view of the contract: namespaces, served operations and each type's member sequence.

The member order is read from the simulator's own WSDL (``tebra_sim/wsdl/KareoServices.wsdl``) on first
use, so the request parser and the response writer follow the one document zeep also reads; nothing is
ordered by hand twice.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

KAREO_NS = "http://www.kareo.com/api/schemas/"
ARRAYS_NS = "http://schemas.microsoft.com/2003/10/Serialization/Arrays"
SERIALIZATION_NS = "http://schemas.microsoft.com/2003/10/Serialization/"
XS_NS = "http://www.w3.org/2001/XMLSchema"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
ACTION_BASE = "http://www.kareo.com/api/schemas/KareoServices/"

# What the simulator answers. GetThrottles' table lives in tebra_sim.throttle.
SERVED_OPERATIONS: tuple[str, ...] = (
    "GetAppointments",
    "GetProviders",
    "GetPractices",
    "GetPatient",
    "GetThrottles",
)

# The soap:address in the committed WSDL; the server swaps in its own base URL per request.
PLACEHOLDER_ADDRESS = "http://127.0.0.1:8089/KareoServices.svc"
WSDL_PATH = Path(__file__).resolve().parent / "wsdl" / "KareoServices.wsdl"


@dataclass(frozen=True)
class Member:
    """One element of a complexType's sequence."""

    name: str
    type_ns: str
    type_name: str
    nillable: bool
    min_occurs: int
    repeated: bool
    # WCF's EmitDefaultValue=false: a null member is left out rather than sent as i:nil.
    emit_default: bool

    @property
    def is_simple(self) -> bool:
        return self.type_ns == XS_NS


@dataclass(frozen=True)
class Schema:
    """Complex types of the Kareo and Arrays namespaces, each flattened (base members first)."""

    types: dict[tuple[str, str], tuple[Member, ...]]
    # The wrapper element of each operation's request (``request`` everywhere among the served operations).
    request_members: dict[str, Member]

    def members(self, type_name: str, ns: str = KAREO_NS) -> tuple[Member, ...]:
        return self.types[(ns, type_name)]

    def member_names(self, type_name: str, ns: str = KAREO_NS) -> list[str]:
        return [member.name for member in self.members(type_name, ns)]


def _resolve(node: etree._Element, value: str) -> tuple[str, str]:
    prefix, _, local = value.rpartition(":")
    return node.nsmap[prefix or None], local


def _sequence_members(node: etree._Element) -> list[Member]:
    members = []
    for element in node.iterfind(f"{{{XS_NS}}}sequence/{{{XS_NS}}}element"):
        type_ns, type_name = _resolve(element, element.get("type"))
        emit = element.find(f".//{{{SERIALIZATION_NS}}}DefaultValue")
        members.append(
            Member(
                name=element.get("name"),
                type_ns=type_ns,
                type_name=type_name,
                nillable=element.get("nillable") == "true",
                min_occurs=int(element.get("minOccurs", "1")),
                repeated=element.get("maxOccurs", "1") != "1",
                emit_default=emit is None or emit.get("EmitDefaultValue") != "false",
            )
        )
    return members


@functools.cache
def load_schema(path: Path = WSDL_PATH) -> Schema:
    """Parse the simulator's WSDL once per process (first use, never at import)."""
    root = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
    raw: dict[tuple[str, str], tuple[tuple[str, str] | None, list[Member]]] = {}
    request_members: dict[str, Member] = {}
    for schema in root.iter(f"{{{XS_NS}}}schema"):
        ns = schema.get("targetNamespace")
        for node in schema.iterfind(f"{{{XS_NS}}}complexType"):
            extension = node.find(f"{{{XS_NS}}}complexContent/{{{XS_NS}}}extension")
            if extension is not None:
                raw[(ns, node.get("name"))] = (
                    _resolve(extension, extension.get("base")),
                    _sequence_members(extension),
                )
            else:
                raw[(ns, node.get("name"))] = (None, _sequence_members(node))
        for node in schema.iterfind(f"{{{XS_NS}}}element"):
            inline = node.find(f"{{{XS_NS}}}complexType")
            if node.get("name") in SERVED_OPERATIONS and inline is not None:
                request_members[node.get("name")] = _sequence_members(inline)[0]

    def flatten(key: tuple[str, str]) -> tuple[Member, ...]:
        base, own = raw[key]
        return (flatten(base) if base else ()) + tuple(own)

    return Schema(types={key: flatten(key) for key in raw}, request_members=request_members)
