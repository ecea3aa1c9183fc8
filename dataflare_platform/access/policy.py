"""The authorization policy: which roles may take which actions, deny by default.

This first policy is role-based only (viewer < launcher < editor < admin, each role
allowed its own actions and those of the roles below it). Scoping by code location, asset
group, job, owner team and attributes (classification, tenant) belongs to the policy engine
that replaces the table below; :func:`load_authorizer` stays the one entry point.
"""

from __future__ import annotations

from dataflare_platform.access.decisions import Action, Decision, Resource
from dataflare_platform.access.principal import Principal

POLICY_VERSION = "roles-1"

_VIEWER: frozenset[str] = frozenset({"view"})
_LAUNCHER = _VIEWER | {"launch", "terminate"}
_EDITOR = _LAUNCHER | {"toggle_automation", "set_cursor", "reload_location"}
_ADMIN = _EDITOR | {"delete_run", "wipe_assets", "admin"}
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "viewer": _VIEWER,
    "launcher": _LAUNCHER,
    "editor": _EDITOR,
    "admin": _ADMIN,
}


class RoleAuthorizer:
    """Allows an action when one of the principal's roles grants it; ``decrypt`` is never
    granted by a role alone (it needs a rule naming the classification)."""

    policy_version = POLICY_VERSION

    def decide(self, principal: Principal, action: Action, resource: Resource) -> Decision:
        granting = sorted(r for r in principal.roles if action in ROLE_ACTIONS.get(r, ()))
        if granting:
            reason = f"role {granting[0]} grants {action}"
        else:
            reason = f"no role of {principal.id} grants {action} (deny by default)"
        return Decision(
            principal=principal,
            action=action,
            resource=resource,
            allowed=bool(granting),
            policy_version=self.policy_version,
            reason=reason,
        )


def load_authorizer() -> RoleAuthorizer:
    """The deployment's authorizer."""
    return RoleAuthorizer()
