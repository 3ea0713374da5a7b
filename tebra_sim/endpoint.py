"""``POST /KareoServices.svc``: one SOAP call from the wire to the answer, in Tebra's order of checks.

Order: route by SOAPAction → throttle (per customer key and operation) → injected InternalServiceFault →
credentials → the operation → injected latency or hang. The throttle comes first because Tebra's gateway
rejects a burst before it looks at who is calling.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from lxml import etree

from tebra_sim import envelope, security
from tebra_sim.operations import HANDLERS, NULL_REFERENCE, BusinessError, ServerFault
from tebra_sim.schema import ACTION_BASE, KAREO_NS
from tebra_sim.simulation import Simulation
from tebra_sim.throttle import violation_message

log = logging.getLogger("tebra_sim")

_OK = {"ErrorMessage": None, "IsError": False, "StackTrace": None}


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    operation: str  # for the log line: the routed operation, or the action that could not be routed
    # ok | is_error | throttled | security | internal_fault | action_not_supported | bad_envelope
    # | maintenance | truncated | connection_reset
    outcome: str
    content_type: str = "text/xml; charset=utf-8"
    reset: bool = False  # drop the connection instead of answering


# What a load balancer in front of a service under maintenance answers: HTML, not SOAP.
MAINTENANCE_PAGE = (
    b"<!DOCTYPE html><html><head><title>Service Unavailable</title></head><body>"
    b"<h1>We'll be back soon</h1><p>Scheduled maintenance is in progress.</p></body></html>"
)
# Members a newer schema might add to a row (the "xsd7" of a WSDL newer than ours).
UNKNOWN_MEMBER_ROWS = {"GetProviders": b"</ProviderData>", "GetPatient": b"</Patient>"}
UNKNOWN_MEMBER = b"<Xsd7PreferredPronoun>they</Xsd7PreferredPronoun>"


def route(soap_action: str | None, first_child: etree._Element) -> tuple[str | None, str]:
    """The served operation named by the SOAPAction header (the body's first child when there is none)."""
    body_name = etree.QName(first_child)
    action = (soap_action or "").strip().strip('"')
    if not action:
        if body_name.namespace == KAREO_NS and body_name.localname in HANDLERS:
            return body_name.localname, f"{ACTION_BASE}{body_name.localname}"
        return None, f"{body_name.namespace}/{body_name.localname}"
    operation = action.removeprefix(ACTION_BASE) if action.startswith(ACTION_BASE) else None
    # WCF dispatches by action alone; a body for another operation would fail to deserialize, which the
    # simulator
    # folds into the same ActionNotSupported fault (docs/tebra.md, "Transport and messages").
    if operation not in HANDLERS or body_name.localname != operation:
        return None, action
    return operation, action


def _request(sim: Simulation, operation: str, wrapper: etree._Element) -> dict[str, Any]:
    """The ``request`` member of ``<Op>``, read strictly; {} when absent or nil."""
    member = sim.schema.request_members[operation]
    child = next((el for el in wrapper if isinstance(el.tag, str)), None)
    if child is None or etree.QName(child) != etree.QName(KAREO_NS, member.name):
        return {}
    if child.get("{http://www.w3.org/2001/XMLSchema-instance}nil") in ("true", "1"):
        return {}
    return envelope.read(child, sim.schema, member.type_name)


def _throttled(sim: Simulation, operation: str, interval_ms: int, shape: str) -> Answer:
    message = violation_message(operation, interval_ms)
    error: Any = {"ErrorMessage": message, "IsError": True, "StackTrace": None}
    if shape == "out_of_order":
        # IsError before ErrorMessage: what made a zeep client raise XMLParseError in the wild
        # (docs/tebra.md, "Rate limits").
        error = envelope.Raw(
            f"<ErrorResponse><IsError>true</IsError><ErrorMessage>{escape(message)}"
            '</ErrorMessage><StackTrace i:nil="true"/></ErrorResponse>'
        )
    body = envelope.response(sim.schema, operation, {"ErrorResponse": error})
    return Answer(429 if shape == "http_429" else 200, body, operation, "throttled")


def _call(sim: Simulation, operation: str, wrapper: etree._Element) -> Answer:
    request = _request(sim, operation, wrapper)
    header = request.get("RequestHeader") if isinstance(request.get("RequestHeader"), dict) else None
    switches = sim.faults.switches

    if switches.throttle:
        violated = sim.throttle.admit(str((header or {}).get("CustomerKey") or ""), operation)
        if violated is not None:
            sim.stats.throttled(operation)
            return _throttled(sim, operation, violated, switches.throttle_shape)
    sim.stats.accepted(operation)

    decision = sim.faults.decide(operation)
    if decision.connection_reset:
        sim.stats.fault("connection_reset")
        return Answer(0, b"", operation, "connection_reset", reset=True)
    if decision.maintenance:
        sim.stats.fault("maintenance")
        return Answer(
            503, MAINTENANCE_PAGE, operation, "maintenance", content_type="text/html; charset=utf-8"
        )
    if decision.internal_fault:
        sim.stats.fault("internal_fault")
        return Answer(500, envelope.internal_service_fault(), operation, "internal_fault")

    secured = security.check(sim.options, header, operation, switches.security, sim.clinic.practice.id)
    if not secured["SecurityResultSuccess"]:
        sim.stats.security_failure(operation)
        body = envelope.response(sim.schema, operation, {"ErrorResponse": _OK, "SecurityResponse": secured})
        return _delayed(
            sim, decision.delay_ms, decision.hang_seconds, Answer(200, body, operation, "security")
        )

    try:
        if decision.business_error:
            # The one IsError text known verbatim (a null Filter; docs/tebra.md, "List reads and their
            # rows"): any other would do as well.
            sim.stats.fault("business_error")
            raise BusinessError(NULL_REFERENCE)
        payload = HANDLERS[operation](sim, request)
        result = {"ErrorResponse": _OK, "SecurityResponse": secured, **payload}
        body = envelope.response(sim.schema, operation, result)
        closing = UNKNOWN_MEMBER_ROWS.get(operation)
        if switches.unknown_member and closing is not None:
            body = body.replace(closing, UNKNOWN_MEMBER + closing)
        answer = Answer(200, body, operation, "ok")
        if decision.truncated:
            sim.stats.fault("truncated")
            answer = Answer(200, body[: len(body) // 2], operation, "truncated")
    except BusinessError as exc:
        error = {"ErrorMessage": exc.message, "IsError": True, "StackTrace": exc.stack_trace}
        body = envelope.response(sim.schema, operation, {"ErrorResponse": error, "SecurityResponse": secured})
        answer = Answer(200, body, operation, "is_error")
    except ServerFault as exc:
        log.info("%s: InternalServiceFault (%s)", operation, exc)
        sim.stats.fault("internal_fault")
        answer = Answer(500, envelope.internal_service_fault(), operation, "internal_fault")
    return _delayed(sim, decision.delay_ms, decision.hang_seconds, answer)


def _delayed(sim: Simulation, delay_ms: float, hang_seconds: float, answer: Answer) -> Answer:
    """Injected latency, then an injected hang; both end early when the server shuts down."""
    if hang_seconds:
        sim.stats.fault("hang")
    total = delay_ms / 1000 + hang_seconds
    if total > 0:
        sim.stopping.wait(total)
    return answer


def handle(sim: Simulation, payload: bytes, soap_action: str | None) -> Answer:
    try:
        wrapper = envelope.body_element(payload)
    except envelope.BadEnvelope as exc:
        sim.stats.fault("deserialization_failed")
        return Answer(500, envelope.deserialization_failed(str(exc)), "?", "bad_envelope")
    operation, action = route(soap_action, wrapper)
    if operation is None:
        sim.stats.call("ActionNotSupported")
        sim.stats.fault("action_not_supported")
        return Answer(
            500, envelope.action_not_supported(action), action.rsplit("/", 1)[-1], "action_not_supported"
        )
    sim.stats.call(operation)
    try:
        return _call(sim, operation, wrapper)
    except envelope.BadEnvelope as exc:  # a required member missing or out of order
        sim.stats.fault("deserialization_failed")
        return Answer(500, envelope.deserialization_failed(str(exc)), operation, "bad_envelope")


def timed(sim: Simulation, payload: bytes, soap_action: str | None) -> Answer:
    """:func:`handle`, logged as one line: operation, HTTP status, outcome, ms. Never a name or a body."""
    started = time.perf_counter()
    answer = handle(sim, payload, soap_action)
    log.info(
        "%s %d %s %.1fms",
        answer.operation,
        answer.status,
        answer.outcome,
        (time.perf_counter() - started) * 1000,
    )
    return answer
