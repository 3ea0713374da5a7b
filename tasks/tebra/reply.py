"""The reader of Tebra's successful replies (GetAppointments, GetProviders, GetPatient, GetPractices,
GetThrottles): fast, and as tolerant as Tebra's own WCF serializer.

zeep builds a typed object for every element of a reply against the schema: for a clinic day of 40
appointments (75 string columns each) that is about 11 ms of the ~19 ms a GetAppointments costs us, for
values that are all strings anyway (every AppointmentData value is ``xs:string``: docs/tebra.md, "List reads
and their rows"). This module
reads the same reply with lxml in one pass (~0.4 ms) into the shapes the gateway already consumes:
``ErrorResponse`` and ``SecurityResponse`` as attribute objects, rows as plain dicts.

zeep still builds every request (GetAppointments' once, as a template: tasks/tebra/template.py) and reads
every reply this module declines: a non-200 status, a SOAP fault, anything not shaped like
``<Op>Response/<Op>Result`` (``read`` raises ``UnreadableReply`` and the gateway hands the same bytes to
zeep, so faults are classified exactly as before).

Tolerant as WCF is, where zeep's strict mode is not (docs/tebra.md, "How replies are read"):

- member order is not required: an ErrorResponse whose members come out of order (one of the throttle shapes
  seen in the wild) still reads as the error it is;
- a member the schema does not know (Tebra adds fields; a newer WSDL) is ignored and named in
  ``unknown_members``, so the gateway can count it, instead of failing the whole reply;
- a member in a foreign namespace is such an unknown member, whatever its local name;
- xs:boolean reads in all four of its lexical forms: ``true``, ``false``, ``1``, ``0``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from lxml import etree

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
KAREO_NS = "http://www.kareo.com/api/schemas/"
ARRAYS_NS = "http://schemas.microsoft.com/2003/10/Serialization/Arrays"
XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"

# No entities, no network, no huge trees: the reply is untrusted input.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)

_SECURITY_FLAGS = ("Authenticated", "Authorized", "CustomerKeyValid", "SecurityResultSuccess")


class UnreadableReply(ValueError):
    """The reply is not the plain success shape this reader handles; let zeep read it."""


def _local(tag: Any) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _ours(tag: Any) -> bool:
    """A member in Tebra's schema namespace (the only one WCF binds a data member from)."""
    return isinstance(tag, str) and (tag.startswith("{" + KAREO_NS + "}") or tag.startswith("{" + ARRAYS_NS))


def _value(element: Any) -> str | None:
    if element.get(XSI_NIL) == "true":
        return None
    return element.text


def _flag(value: str | None) -> bool | None:
    """xs:boolean: ``true``/``1`` and ``false``/``0`` (whitespace collapsed); anything else reads None."""
    if value is None:
        return None
    lexical = value.strip().lower()
    if lexical in ("true", "1"):
        return True
    if lexical in ("false", "0"):
        return False
    return None


def _children(
    element: Any, unknown: list[str] | None = None, known: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The members of ``element`` by local name; a foreign-namespace one, or one outside ``known`` when given,
    is named in ``unknown`` and left out."""
    out: dict[str, Any] = {}
    for child in element:
        name = _local(child.tag)
        if not name:
            continue
        if not _ours(child.tag) or (known and name not in known):
            if unknown is not None:
                unknown.append(name)
            continue
        out[name] = child
    return out


def _error_response(element: Any | None) -> SimpleNamespace | None:
    if element is None or element.get(XSI_NIL) == "true":
        return None
    members = _children(element)
    return SimpleNamespace(
        IsError=bool(_flag(_value(members["IsError"]))) if "IsError" in members else False,
        ErrorMessage=_value(members["ErrorMessage"]) if "ErrorMessage" in members else None,
        StackTrace=_value(members["StackTrace"]) if "StackTrace" in members else None,
    )


def _security_response(element: Any | None) -> SimpleNamespace | None:
    if element is None or element.get(XSI_NIL) == "true":
        return None
    members = _children(element)
    values: dict[str, Any] = {
        name: _flag(_value(members[name])) if name in members else None for name in _SECURITY_FLAGS
    }
    values["SecurityResult"] = _value(members["SecurityResult"]) if "SecurityResult" in members else None
    missing = members.get("PermissionsMissing")
    permissions: list[str] = []
    if missing is not None and missing.get(XSI_NIL) != "true":
        for holder in missing:
            permissions.extend(item.text or "" for item in holder if _local(item.tag) == "string")
    values["PermissionsMissing"] = {"Permission": {"string": permissions}} if permissions else None
    return SimpleNamespace(**values)


def _row(row: Any, names: dict[Any, str], known: frozenset[str] | None, unknown: list[str]) -> dict[str, Any]:
    """One row's columns as a dict; ``names`` caches tag → member name ('' for a member to skip)."""
    values: dict[str, str | None] = {}
    for column in row:
        tag = column.tag
        name = names.get(tag) if isinstance(tag, str) else ""
        if name is None:
            local = _local(tag)
            name = names[tag] = local if _ours(tag) and (known is None or local in known) else ""
            if not name and local:
                unknown.append(local)
        if name:
            # An empty or nil column reads None either way: the nil attribute is looked up only for a
            # column with text (the columns not asked for, about half, come back empty or nil). A member
            # with members of its own (a patient's Cases) is not a column: it reads None.
            text = column.text
            values[name] = None if text is None or len(column) or column.get(XSI_NIL) == "true" else text
    return values


def _rows(
    container: Any | None, item: str, known: frozenset[str] | None, unknown: list[str]
) -> dict[str, list[dict[str, str | None]]] | None:
    if container is None or container.get(XSI_NIL) == "true":
        return None
    # Every row repeats the same 75 column tags: name each tag once per reply, not once per cell.
    names: dict[Any, str] = {}
    rows = []
    for row in container:
        if _local(row.tag) != item or not _ours(row.tag):
            unknown.append(_local(row.tag))
            continue
        if row.get(XSI_NIL) == "true":
            continue
        rows.append(_row(row, names, known, unknown))
    return {item: rows}


def read(
    body: bytes,
    operation: str,
    *,
    array: str,
    item: str | None,
    known: frozenset[str] | None = None,
) -> SimpleNamespace:
    """The ``<operation>Result`` of a 200 reply: ErrorResponse, SecurityResponse, ``array`` of ``item`` rows
    (``item`` None: ``array`` is one object, GetPatient's Patient, read as one dict or None), and
    ``unknown_members``: the names of the members the schema does not have (``known``, the row's members, when
    given), each once.

    Raises :class:`UnreadableReply` for anything else (a fault, another operation's reply, broken XML).
    """
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise UnreadableReply("not XML") from exc
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise UnreadableReply("not a SOAP 1.1 envelope")
    body_element = root.find(f"{{{SOAP_ENV}}}Body")
    wrapper = next(iter(body_element), None) if body_element is not None else None
    if wrapper is None or _local(wrapper.tag) != f"{operation}Response":
        raise UnreadableReply("not a reply to this operation")
    result = next(iter(wrapper), None)
    if result is None or _local(result.tag) != f"{operation}Result":
        raise UnreadableReply("no result element")
    unknown: list[str] = []
    members = _children(result, unknown, frozenset({"ErrorResponse", "SecurityResponse", array}))
    container = members.get(array)
    if item is None:
        payload: Any = None
        if container is not None and container.get(XSI_NIL) != "true":
            payload = _row(container, {}, known, unknown)
    else:
        payload = _rows(container, item, known, unknown)
    return SimpleNamespace(
        ErrorResponse=_error_response(members.get("ErrorResponse")),
        SecurityResponse=_security_response(members.get("SecurityResponse")),
        unknown_members=sorted(set(unknown)),
        **{array: payload},
    )
