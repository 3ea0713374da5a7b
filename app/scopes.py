"""What a verified token may do: the API's scopes, and the identity provider's roles mapped to them.

A token's scopes are its ``scope`` claim (space-separated) and Auth0's ``permissions`` claim, united with
the scopes its roles grant (``OIDC_ROLE_CLAIM``, ``OIDC_ROLE_SCOPES``; docs/security.md). The verifier
(app/tokens.py) stores what it derived in the claims under :data:`SCOPES_KEY` and :data:`ROLES_KEY`.
"""

from __future__ import annotations

from typing import Any

READ_SCHEDULE = "read:schedule"
SYNC_SCHEDULE = "sync:schedule"
WRITE_PATIENTS = "write:patients"
OPS_BREAKER = "ops:breaker"
ALL_SCOPES = (READ_SCHEDULE, SYNC_SCHEDULE, WRITE_PATIENTS, OPS_BREAKER)
SCOPES_KEY = "_scopes"  # derived entries of verified claims (app/tokens.py TokenVerifier)
ROLES_KEY = "_roles"

Claims = dict[str, Any]


class Roles:
    """The provider's roles mapped to our scopes: ``claim`` names the roles, ``table`` says what each may do.

    ``claim`` is looked up as a top-level claim first (Auth0's namespaced ``https://…/roles`` has dots in
    it), then as a dotted path into nested objects (Keycloak's ``realm_access.roles``). Its value is a list
    of role names or one name. Unknown roles grant nothing.
    """

    def __init__(self, claim: str = "roles", table: dict[str, tuple[str, ...]] | None = None) -> None:
        self.claim = claim
        self.table = dict(table or {})
        unknown = {scope for scopes in self.table.values() for scope in scopes} - set(ALL_SCOPES)
        if unknown:
            raise ValueError(f"OIDC_ROLE_SCOPES names unknown scopes: {', '.join(sorted(unknown))}")

    def of(self, claims: Claims) -> list[str]:
        """The role names the claims carry (strings only, in their order)."""
        value: Any = claims.get(self.claim)
        if value is None and "." in self.claim:
            value = claims
            for part in self.claim.split("."):
                value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str):
            value = [value]
        return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []

    def scopes(self, roles: list[str]) -> set[str]:
        return {scope for role in roles for scope in self.table.get(role, ())}


def scopes_of(claims: Claims) -> frozenset[str]:
    """The scopes granted: what the verifier derived (token scopes and roles), else the token's own."""
    derived = claims.get(SCOPES_KEY)
    if isinstance(derived, list):
        return frozenset(derived)
    return frozenset(token_scopes(claims))


def roles_of(claims: Claims) -> list[str]:
    """The role names the verifier found in the token (empty for a token without roles)."""
    found = claims.get(ROLES_KEY)
    return list(found) if isinstance(found, list) else []


def token_scopes(claims: Claims) -> set[str]:
    """The token's own scopes: the ``scope`` string and Auth0's ``permissions`` list, united."""
    granted: set[str] = set()
    scope = claims.get("scope")
    if isinstance(scope, str):
        granted.update(scope.split())
    permissions = claims.get("permissions")
    if isinstance(permissions, list):
        granted.update(item for item in permissions if isinstance(item, str))
    return granted
