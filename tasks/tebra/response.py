"""What a schema-valid Tebra reply says about the call, and zeep's reply objects as plain values.

A reply can be valid XML and still refuse the call: ``ErrorResponse.IsError`` (throttled or a business
error) or a ``SecurityResponse`` that does not grant it. :func:`check_response` raises the classified error
(tasks/tebra/errors.py) and never echoes a credential.
"""

from __future__ import annotations

from typing import Any

from zeep.helpers import serialize_object

from config.settings import Settings
from tasks.tebra.errors import (
    TebraBusinessError,
    TebraSecurityError,
    is_throttle_text,
    safe_tebra_text,
    throttled,
)


def check_response(operation: str, response: Any, settings: Settings | None = None) -> None:
    """Raise the classified error a schema-valid reply carries (ErrorResponse, SecurityResponse)."""
    if response is None:
        raise TebraBusinessError(f"{operation}: empty reply from Tebra", operation)
    error = getattr(response, "ErrorResponse", None)
    is_error = bool(error is not None and error.IsError)
    message = (error.ErrorMessage or "") if error is not None else ""
    if is_error and is_throttle_text(message):
        raise throttled(operation, message, "ErrorResponse")
    security = getattr(response, "SecurityResponse", None)
    if security is not None:
        problem = _security_problem(security)
        if problem:
            raise TebraSecurityError(f"{operation}: {_redact(problem, settings)}", operation)
    if is_error:
        reported = safe_tebra_text(message)
        raise TebraBusinessError(f"{operation}: Tebra reported an error: {reported}", operation)


def _security_problem(security: Any) -> str | None:
    """What is wrong with a SecurityResponse, or None when it grants the call."""
    flags = {
        "Authenticated": security.Authenticated,
        "Authorized": security.Authorized,
        "CustomerKeyValid": security.CustomerKeyValid,
        "SecurityResultSuccess": security.SecurityResultSuccess,
    }
    missing = _permissions_missing(security)
    failed = [name for name, value in flags.items() if value is False]
    if not failed and not missing:
        return None
    parts = ["Tebra refused the call"]
    if failed:
        parts.append(", ".join(f"{name}=false" for name in failed))
    if security.SecurityResult:
        parts.append(f"SecurityResult: {' '.join(str(security.SecurityResult).split())[:200]}")
    if missing:
        parts.append(f"missing permissions: {', '.join(str(p) for p in missing)[:300]}")
    return "; ".join(parts)


def _permissions_missing(security: Any) -> list[str]:
    """PermissionsMissing/Permission (an ArrayOfstring) as a list of names."""
    holder = plain(security.PermissionsMissing)
    permission = holder.get("Permission") if isinstance(holder, dict) else None
    return [str(name) for name in items(permission, "string") if name]


def _redact(message: str, settings: Settings | None) -> str:
    """Never echo a credential, whatever Tebra put in its security text."""
    if settings is None:
        return message
    for secret in (settings.tebra_password, settings.tebra_customer_key):
        if secret:
            message = message.replace(secret, "***")
    return message


def plain(value: Any) -> Any:
    """A zeep object as plain dicts and lists (None stays None)."""
    return None if value is None else serialize_object(value, dict)


def items(container: Any, item: str) -> list[Any]:
    """The repeated ``item`` of a zeep ArrayOf… (nil, absent or empty give [])."""
    if container is None:
        return []
    value = container if isinstance(container, dict | list) else plain(container)
    values = value.get(item) if isinstance(value, dict) else value
    if values is None:
        return []
    return list(values) if isinstance(values, list) else [values]
