"""Every /api route declares itself once (app/route.py), and the served OpenAPI document is generated from
those declarations with the code's own tables: the error codes, the flow's states, the sync states.

The fuzzing of the served API from this document is tests/reliability/test_bad_input.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from app import auth, ratelimit
from app.api.answers import SYNC_STATES
from app.errors import STATUS_OF
from app.route import EVERY_ROUTE_ERRORS, declaration_of
from tasks.patients import flow


def api_rules(app: Any) -> list[Any]:
    return [rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/")]


@pytest.fixture
def document(client: Any, auth_headers: dict[str, str]) -> dict[str, Any]:
    """The document as served (GET /api/v1/openapi.json with a token)."""
    answer = client.get("/api/v1/openapi.json", headers=auth_headers)
    assert answer.status_code == 200
    found: dict[str, Any] = answer.get_json()
    return found


def test_every_api_route_is_declared_once_with_its_one_method(app: Any) -> None:
    for rule in api_rules(app):
        declared = declaration_of(app.view_functions[rule.endpoint])
        assert declared is not None, f"{rule.rule} has no route() declaration"
        assert (rule.methods or set()) - {"HEAD", "OPTIONS"} == {declared.method}, rule.rule
        assert declared.scope in auth.ALL_SCOPES
        assert declared.cost in {ratelimit.READ_COST, ratelimit.WRITE_COST, ratelimit.SYNC_COST}


def test_the_rate_limiter_charges_what_the_route_declares(app: Any) -> None:
    views = app.view_functions
    assert ratelimit.cost_of(views["api.request_sync"], "POST") == ratelimit.SYNC_COST
    assert ratelimit.cost_of(views["api.change_status"], "PATCH") == ratelimit.WRITE_COST
    assert ratelimit.cost_of(views["api.list_appointments"], "GET") == ratelimit.READ_COST
    assert ratelimit.cost_of(views["api.list_appointments"], "HEAD") == ratelimit.READ_COST
    # Nothing declared (no route matched, or a preflight): by the method, as before declarations.
    assert ratelimit.cost_of(None, "GET") == ratelimit.READ_COST
    assert ratelimit.cost_of(None, "DELETE") == ratelimit.WRITE_COST
    assert ratelimit.cost_of(views["api.change_status"], "OPTIONS") == ratelimit.READ_COST


def test_audited_routes_record_their_declared_action(app: Any) -> None:
    audited = {
        rule.endpoint: declared.audit
        for rule in api_rules(app)
        if (declared := declaration_of(app.view_functions[rule.endpoint])) and declared.audit
    }
    assert audited == {
        "api.list_appointments": "appointments.read",
        "api.list_patients": "patients.read",
        "api.change_status": "patients.status_change",
        "api.request_sync": "schedule.sync_requested",
        "api.change_breaker": "ops.breaker_changed",
        "api.change_tebra": "ops.tebra_changed",
    }
    for endpoint, action in audited.items():
        assert app.view_functions[endpoint].audit_action == action


def test_the_document_has_every_declared_route_with_its_scope_and_errors(
    app: Any, document: dict[str, Any]
) -> None:
    assert document["openapi"] == "3.1.0"
    for rule in api_rules(app):
        declared = declaration_of(app.view_functions[rule.endpoint])
        assert declared is not None
        path = rule.rule.replace("<", "{").replace(">", "}")
        operation = document["paths"][path][declared.method.lower()]
        assert operation["security"] == [{"bearer": [declared.scope]}]
        assert str(declared.answer.status) in operation["responses"]
        errors = {int(status) for status in operation["responses"]} - {declared.answer.status}
        assert errors == {*EVERY_ROUTE_ERRORS, *declared.errors}, path
    assert {"/health", "/ready"} <= set(document["paths"])


def test_the_enums_come_from_the_code_tables(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert schemas["ErrorBody"]["properties"]["code"]["enum"] == list(STATUS_OF)
    assert schemas["StatusChange"]["properties"]["status"]["enum"] == list(flow.STATES)
    assert schemas["StatusChanged"]["properties"]["status"]["enum"] == list(flow.STATES)
    assert schemas["SyncAccepted"]["properties"]["status"]["enum"] == list(SYNC_STATES)
    assert schemas["Error"]["properties"]["success"]["const"] is False


def test_query_parameters_are_never_null(document: dict[str, Any]) -> None:
    parameters = [
        parameter
        for operations in document["paths"].values()
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
    ]
    assert parameters
    for parameter in parameters:
        schema = parameter["schema"]
        assert schema.get("type") != "null" and not isinstance(schema.get("type"), list), parameter
        assert None not in schema.get("enum", []), parameter
