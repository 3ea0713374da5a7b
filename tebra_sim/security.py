"""The RequestHeader check and the SecurityResponse shapes of docs/tebra.md, "Security replies" (all sent
with HTTP 200)."""

from __future__ import annotations

from typing import Any

from tebra_sim.options import SimOptions

# Tebra's permission names are not public; these are stand-ins a client can show to an operator.
_PERMISSIONS = {
    "GetAppointments": ["AppointmentsRead"],
    "GetProviders": ["ProvidersRead"],
    "GetPractices": ["PracticesRead"],
    "GetPatient": ["PatientsRead"],
    "GetThrottles": ["ThrottlesRead"],
}


# The login refusals: mode → (CustomerKeyValid, SecurityResult); Authenticated and Authorized are false.
_REFUSALS = {
    "bad_customer_key": (False, "Invalid customer key"),
    "bad_password": (True, "Invalid user name and/or password"),
    "user_not_found": (True, "User not found"),
}


def _response(
    *,
    authenticated: bool,
    authorized: bool,
    key_valid: bool,
    result: str,
    customer_id: int,
    missing: list[str] | None = None,
    practices: list[int] | None = None,
) -> dict[str, Any]:
    return {
        "Authenticated": authenticated,
        "Authorized": authorized,
        "CustomerId": customer_id,
        "CustomerKeyValid": key_valid,
        "PermissionsMissing": {"Permission": missing} if missing else None,
        "PracticesAuthorized": {"PracticeID": practices} if practices else None,
        "SecurityResult": result,
        "SecurityResultSuccess": authenticated and authorized,
    }


def check(
    options: SimOptions, header: dict[str, Any] | None, operation: str, forced: str | None, practice_id: int
) -> dict[str, Any]:
    """The SecurityResponse for this call; ``SecurityResultSuccess`` says whether the payload may follow.

    ``forced`` is the fault switch (bad_password, bad_customer_key, permissions_missing, user_not_found);
    it wins over the real credentials so that a test can see each shape without knowing them.
    """
    header = header or {}
    mode = forced
    if mode is None and header.get("CustomerKey") != options.customer_key:
        mode = "bad_customer_key"
    elif mode is None and (header.get("User") != options.user or header.get("Password") != options.password):
        mode = "bad_password"
    refused = _REFUSALS.get(mode or "")
    if refused is not None:
        key_valid, result = refused
        return _response(
            authenticated=False, authorized=False, key_valid=key_valid, customer_id=0, result=result
        )
    if mode == "permissions_missing":
        return _response(
            authenticated=True,
            authorized=False,
            key_valid=True,
            customer_id=options.customer_id,
            result="User does not have the permissions required for this operation",
            missing=_PERMISSIONS.get(operation, ["Unknown"]),
            practices=[practice_id],
        )
    return _response(
        authenticated=True,
        authorized=True,
        key_valid=True,
        customer_id=options.customer_id,
        result="Success",
        practices=[practice_id],
    )
