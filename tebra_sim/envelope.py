"""SOAP 1.1 envelopes as WCF's DataContractSerializer reads and writes them.

Reading is strict in sequence order: a member that arrives after a later member, or with a name the type does
not have, is dropped without an error, which is exactly how WCF loses a ``User`` sent before ``Password``.
Writing follows WCF's habits: ``s:`` on the envelope, a default namespace on ``<Op>Response``, ``i:`` for
nils, members in schema order, null members with EmitDefaultValue=false left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from lxml import etree

from tebra_sim.schema import ARRAYS_NS, KAREO_NS, SOAP_ENV_NS, XSI_NS, Member, Schema

DISPATCHER_NS = "http://schemas.microsoft.com/net/2005/12/windowscommunicationfoundation/dispatcher"
ADDRESSING_NONE_NS = "http://schemas.microsoft.com/ws/2005/05/addressing/none"
INTERNAL_ERROR_TEXT = (
    "The server was unable to process the request due to an internal error.  For more information about the "
    "error, either turn on IncludeExceptionDetailInFaults (either from ServiceBehaviorAttribute or from the "
    "&lt;serviceDebug&gt; configuration behavior) on the server in order to send the exception information "
    "back to the client, or turn on tracing as per the Microsoft .NET Framework SDK documentation and "
    "inspect the server trace logs."
)
_PREFIX = {KAREO_NS: "", ARRAYS_NS: "a:"}
# No DTDs, no entities, no network: the body comes from whoever can reach the port.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


class BadEnvelope(ValueError):
    """Not a SOAP 1.1 envelope with a body element; WCF answers such a request with a fault."""


@dataclass(frozen=True)
class Raw:
    """Markup written verbatim, for the deliberately malformed throttle shape."""

    xml: str


@dataclass(frozen=True)
class FlatItems:
    """The items of a repeated member whose type is flat (every member a single simple value, as every column
    of AppointmentData is), each a dict of strings or None, narrowed to ``columns`` when given.

    Written exactly as a list of those dicts narrowed to ``columns`` would be, but each item by one %-template
    per set of members present instead of member by member over the type's 75 members: a 40-row reply went
    from ~10 to ~2 µs a row (docs/simulator.md).
    """

    items: Sequence[Mapping[str, str | None]]
    columns: Set[str] | None = None


def body_element(payload: bytes) -> etree._Element:
    """The first element inside ``s:Body``. Anything in ``s:Header`` (zeep's WS-Addressing) is ignored."""
    try:
        root = etree.fromstring(payload, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise BadEnvelope(f"unreadable XML: {exc}") from exc
    if root.tag != f"{{{SOAP_ENV_NS}}}Envelope":
        raise BadEnvelope("not a SOAP 1.1 envelope")
    body = root.find(f"{{{SOAP_ENV_NS}}}Body")
    child = None if body is None else next((el for el in body if isinstance(el.tag, str)), None)
    if child is None:
        raise BadEnvelope("empty SOAP body")
    return child


def _is_nil(element: etree._Element) -> bool:
    return element.get(f"{{{XSI_NS}}}nil") in ("true", "1")


def read(element: etree._Element, schema: Schema, type_name: str, type_ns: str = KAREO_NS) -> dict[str, Any]:
    """The members of ``element`` as a dict, read in sequence order like WCF.

    Values: None for ``xsi:nil``, a str for simple members, a dict for complex ones, a list for repeated ones.
    An absent member is an absent key.
    """
    members = schema.members(type_name, type_ns)
    positions = _positions(schema, type_name, type_ns)
    prefix = f"{{{type_ns}}}"  # lxml's "{namespace}local" tag: cheaper to split than an etree.QName per child
    values: dict[str, Any] = {}
    position = 0
    for child in element:
        tag = child.tag
        if not isinstance(tag, str) or not tag.startswith(prefix):
            continue  # a comment or processing instruction, or another namespace
        localname = tag[len(prefix) :]
        index = -1  # the first member of that name at or after the current one
        for place in positions.get(localname, ()):
            if place >= position:
                index = place
                break
        if index < 0:
            continue  # unknown, or out of order: WCF drops it silently
        if index > position:
            _require_none_skipped(members, position, index, localname, type_ns)
        member = members[index]
        value = (
            None
            if _is_nil(child)
            else (
                child.text or ""
                if member.is_simple
                else read(child, schema, member.type_name, member.type_ns)
            )
        )
        if member.repeated:
            values.setdefault(member.name, []).append(value)
            position = index
        else:
            values[member.name] = value
            position = index + 1
    _require_none_skipped(members, position, len(members), None, type_ns)
    return values


_POSITIONS: dict[tuple[int, str, str], tuple[Schema, dict[str, tuple[int, ...]]]] = {}


def _positions(schema: Schema, type_name: str, type_ns: str) -> dict[str, tuple[int, ...]]:
    """Each member name's places in the type's sequence, worked out once per type: a GetAppointments request
    carries ~40 Fields toggles, and finding each by a scan of the 75 members was most of reading it."""
    key = (id(schema), type_ns, type_name)
    found = _POSITIONS.get(key)
    if found is None or found[0] is not schema:
        places: dict[str, list[int]] = {}
        for index, member in enumerate(schema.members(type_name, type_ns)):
            places.setdefault(member.name, []).append(index)
        found = (schema, {name: tuple(indexes) for name, indexes in places.items()})
        _POSITIONS[key] = found
    return found[1]


def _require_none_skipped(
    members: tuple[Member, ...], start: int, stop: int, found: str | None, ns: str
) -> None:
    """WCF skips optional members freely but refuses to skip a required one (Fields, RequestHeader)."""
    for member in members[start:stop]:
        if member.min_occurs >= 1 and not member.repeated:
            seen = (
                f"'Element' '{found}' from namespace '{ns}' is not expected. " if found else "End element. "
            )
            raise BadEnvelope(f"{seen}Expecting element '{member.name}'.")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(str(value))


@dataclass(frozen=True)
class _Slot:
    """One member of a complex type as the writer needs it, worked out once per type."""

    member: Member
    name: str  # the element name with its prefix
    nil: str | None  # what a None value writes (None: nothing)
    inline: bool  # a simple, single value: written in place, without a call per member


_PLANS: dict[tuple[int, str, str], tuple[Schema, tuple[_Slot, ...]]] = {}


def _plan(schema: Schema, type_name: str, type_ns: str) -> tuple[_Slot, ...]:
    # A 40-row reply writes ~3,000 members; deciding each one's name and nil form once per type, not once
    # per member written, halved the simulator's time per call (docs/simulator.md).
    key = (id(schema), type_ns, type_name)
    found = _PLANS.get(key)
    if found is None or found[0] is not schema:
        prefix = _PREFIX[type_ns]
        slots = tuple(
            _Slot(
                member,
                f"{prefix}{member.name}",
                f'<{prefix}{member.name} i:nil="true"/>' if member.nillable and member.emit_default else None,
                member.is_simple and not member.repeated,
            )
            for member in schema.members(type_name, type_ns)
        )
        found = (schema, slots)
        _PLANS[key] = found
    return found[1]


def _flat_template(
    schema: Schema, member: Member, prefix: str, present: frozenset[str]
) -> tuple[tuple[str, ...], str]:
    """The members to fill, in schema order, and the %-template of one item of a flat type with ``present``
    (worked out once per type and set of members, like _plan)."""
    key = (id(schema), member.type_ns, member.type_name, prefix + member.name, present)
    found = _FLAT_TEMPLATES.get(key)
    if found is None or found[0] is not schema:
        declare = f' xmlns:a="{ARRAYS_NS}"' if member.type_ns == ARRAYS_NS else ""
        names: list[str] = []
        parts = [f"<{prefix}{member.name}{declare}>"]
        for slot in _plan(schema, member.type_name, member.type_ns):
            if not slot.inline:
                raise TypeError(f"{member.type_name} is not flat: {slot.member.name} is not a single value")
            if slot.member.name in present:
                names.append(slot.member.name)
                parts.append(f"<{slot.name}>%s</{slot.name}>")
            elif slot.nil is not None:  # what a None or absent member writes, as in _write
                parts.append(slot.nil.replace("%", "%%"))
        parts.append(f"</{prefix}{member.name}>")
        found = (schema, (tuple(names), "".join(parts)))
        _FLAT_TEMPLATES[key] = found
    return found[1]


_FLAT_TEMPLATES: dict[tuple[Any, ...], tuple[Schema, tuple[tuple[str, ...], str]]] = {}


def _write_flat(schema: Schema, member: Member, prefix: str, value: FlatItems, out: list[str]) -> None:
    """Each item as ``_write`` writes a dict: members in schema order, a None one left out (or nil)."""
    columns = value.columns
    # Rows of one operation share their keys, so the members present are worked out once per key set.
    shapes: dict[tuple[str, ...], tuple[tuple[str, ...], str]] = {}
    for item in value.items:
        keys = tuple(item)
        shape = shapes.get(keys)
        if shape is None:
            present = frozenset(keys if columns is None else (k for k in keys if k in columns))
            shape = shapes[keys] = _flat_template(schema, member, prefix, present)
        names, template = shape
        values = [item[name] for name in names]
        if None in values:  # a None member is left out: the template of the members that are set
            present = frozenset(name for name, text in zip(names, values, strict=True) if text is not None)
            names, template = _flat_template(schema, member, prefix, present)
            values = [item[name] for name in names]
        joined = "".join(values)  # type: ignore[arg-type]  # no None left
        if "&" in joined or "<" in joined or ">" in joined:
            values = [escape(text) for text in values]  # type: ignore[arg-type]
        out.append(template % tuple(values))


def _write(schema: Schema, member: Member, prefix: str, value: Any, out: list[str]) -> None:
    name = f"{prefix}{member.name}"
    if isinstance(value, Raw):
        out.append(value.xml)
        return
    if value is None:
        if member.nillable and member.emit_default:
            out.append(f'<{name} i:nil="true"/>')
        return
    if member.repeated:
        single = Member(**{**member.__dict__, "repeated": False})
        if isinstance(value, FlatItems):
            _write_flat(schema, single, prefix, value, out)
            return
        for item in value:
            _write(schema, single, prefix, item, out)
        return
    if member.is_simple:
        out.append(f"<{name}>{_text(value)}</{name}>")
        return
    children = schema.members(member.type_name, member.type_ns)
    child_prefix = _PREFIX[member.type_ns]
    declare = f' xmlns:a="{ARRAYS_NS}"' if member.type_ns == ARRAYS_NS else ""
    if isinstance(value, (list, FlatItems)):  # an ArrayOfX given as its items
        value = {children[0].name: value}
    out.append(f"<{name}{declare}>")
    for slot in _plan(schema, member.type_name, member.type_ns):
        item = value.get(slot.member.name)
        if item is None:  # as _write would for it, without the call
            if slot.nil is not None:
                out.append(slot.nil)
        elif slot.inline and not isinstance(item, Raw):
            out.append(f"<{slot.name}>{_text(item)}</{slot.name}>")
        else:
            _write(schema, slot.member, child_prefix, item, out)
    out.append(f"</{name}>")


def response(schema: Schema, operation: str, result: dict[str, Any]) -> bytes:
    """``<Op>Response/<Op>Result`` holding ``result`` (keys are the members of ``<Op>Resp``)."""
    out = [
        f'<s:Envelope xmlns:s="{SOAP_ENV_NS}"><s:Body>',
        f'<{operation}Response xmlns="{KAREO_NS}">',
        f'<{operation}Result xmlns:i="{XSI_NS}">',
    ]
    for member in schema.members(f"{operation}Resp"):
        # A member left out of ``result`` is left off the wire: an error carries no payload at all, which zeep
        # reads as None (a nil complex member would come back as an empty object instead).
        if member.name in result:
            _write(schema, member, "", result[member.name], out)
    out.append(f"</{operation}Result></{operation}Response></s:Body></s:Envelope>")
    return "".join(out).encode("utf-8")


def fault(code_ns: str, code: str, text: str) -> bytes:
    """A WCF SOAP 1.1 fault (sent with HTTP 500). ``text`` must already be XML-escaped."""
    return (
        f'<s:Envelope xmlns:s="{SOAP_ENV_NS}"><s:Body><s:Fault>'
        f'<faultcode xmlns:a="{code_ns}">a:{code}</faultcode>'
        f'<faultstring xml:lang="en-US">{text}</faultstring>'
        "</s:Fault></s:Body></s:Envelope>"
    ).encode()


def internal_service_fault() -> bytes:
    return fault(DISPATCHER_NS, "InternalServiceFault", INTERNAL_ERROR_TEXT)


def action_not_supported(action: str) -> bytes:
    return fault(
        ADDRESSING_NONE_NS,
        "ActionNotSupported",
        escape(
            f"The message with Action '{action}' cannot be processed at the receiver, due to a "
            "ContractFilter mismatch at the EndpointDispatcher. This may be because of either a contract "
            "mismatch (mismatched Actions between sender and receiver) or a binding/security mismatch "
            "between the sender and the receiver.  Check that sender and receiver have the same contract and "
            "the same binding (including security requirements, e.g. Message, Transport, None)."
        ),
    )


def deserialization_failed(reason: str) -> bytes:
    return fault(
        DISPATCHER_NS,
        "DeserializationFailed",
        escape(f"The formatter threw an exception while trying to deserialize the message: {reason}"),
    )
