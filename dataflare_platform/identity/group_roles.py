"""Group → role mapping shared by the directory-backed logins (OpenID Connect, LDAP): an
identity provider says which groups someone is in; the platform's settings say what each
group may do. A group with no entry grants nothing (deny by default)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dataflare_platform.access.principal import NAME_PATTERN, ROLES, is_assignable_role
from dataflare_platform.errors import InvalidInputError


def check_mapping(mapping: Mapping[str, frozenset[str]]) -> Mapping[str, frozenset[str]]:
    """``mapping`` if every role it grants is one of the platform's roles (a misspelt role
    in the settings fails at load, not silently at login)."""
    for group, roles in mapping.items():
        unknown = sorted(r for r in roles if not is_assignable_role(r))
        if unknown:
            raise InvalidInputError(
                f"group {group[:80]!r} maps to unknown role(s) {unknown}; roles are "
                f"{list(ROLES)}, reviewer, operator, scanner and publisher@<namespace>"
            )
    return mapping


def roles_for(groups: Iterable[str], mapping: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """The union of the roles the mapped groups grant."""
    roles: set[str] = set()
    for group in groups:
        roles |= mapping.get(group, frozenset())
    return frozenset(roles)


def principal_groups(groups: Iterable[str]) -> frozenset[str]:
    """The groups a Principal can carry: names outside the principal name pattern (DNs,
    names with spaces) are left out of ``Principal.groups``; roles are mapped from the raw
    names before this."""
    return frozenset(g for g in groups if NAME_PATTERN.match(g))
