"""The rights a principal recorded earlier holds now, for work done on its behalf later
(the runs of a backfill it requested, submitted by the daemon).

Local users and service accounts are re-read from the home's identity store: a removed
user, a changed role or a revoked token applies to what they requested before. Users of an
external directory (OIDC, LDAP) cannot be re-read without their sign-in: they keep the
roles their provider gave at request time, as their sessions do (docs/security.md).
"""

from __future__ import annotations

from dataflare_platform.access.principal import EXTERNAL_PROVIDERS, Principal
from dataflare_platform.identity.local_users import LocalUsers
from dataflare_platform.identity.store import IdentityStore
from dataflare_platform.identity.tokens import ServiceTokens


def current_rights(recorded: Principal, store: IdentityStore) -> Principal:
    """``recorded`` with the roles it holds now (none once removed or revoked)."""
    if recorded.via in EXTERNAL_PROVIDERS:
        return recorded
    if recorded.kind == "user" and recorded.via == "local":
        now = LocalUsers(store).current(recorded.name)
        roles = now.roles if now is not None else frozenset()
    elif recorded.kind == "service" and recorded.via == "token":
        roles = ServiceTokens(store).current_roles(recorded.name)
    else:
        roles = frozenset()
    return recorded.model_copy(update={"roles": roles})
