"""The Cedar schema every policy is validated against: the entity types, their attributes
and the actions, with the role table as nested action groups.

The schema is built from :data:`ROLE_ACTIONS` rather than written by hand, so the role
semantics (each role includes those below it) live in one place: the action group
``role/launcher`` contains ``role/viewer`` and the actions the launcher adds, and a rule
``action in Dataflare::Action::"role/launcher"`` grants exactly the launcher's actions.
Validating policies against it turns a misspelt attribute, action or entity type into an
error at load instead of a rule that silently never matches.
"""

from __future__ import annotations

import itertools
import json

NAMESPACE = "Dataflare"
ROLE_ORDER = ("viewer", "launcher", "editor", "admin")

_VIEWER: frozenset[str] = frozenset({"view"})
_LAUNCHER = _VIEWER | {"launch", "terminate"}
_EDITOR = _LAUNCHER | {"toggle_automation", "set_cursor", "reload_location"}
_ADMIN = _EDITOR | {"delete_run", "wipe_assets", "admin"}
# Each role may take its own actions and those of every role below it. ``decrypt`` is in no
# role: it is granted only by a rule that names it and a classification.
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "viewer": _VIEWER,
    "launcher": _LAUNCHER,
    "editor": _EDITOR,
    "admin": _ADMIN,
}
UNGROUPED_ACTIONS = ("decrypt",)
# The plugin marketplace's roles (issue 20 §2): each its own action group, in no other
# role's (an admin does not approve, publish or scan). The publisher's rule in the policy
# also scopes it to ``principal.namespaces``.
PLUGIN_ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "publisher": frozenset({"plugin_submit", "plugin_publish", "plugin_deprecate", "plugin_yank"}),
    "scanner": frozenset({"plugin_scan"}),
    "reviewer": frozenset({"plugin_approve"}),
    "operator": frozenset({"plugin_revoke"}),
}

# Attributes a rule may read. Optional ones need ``has`` before use (the validator says so).
PRINCIPAL_ATTRIBUTES = {
    "kind": ("String", True),
    "name": ("String", True),
    "via": ("String", True),
    "roles": ("Set<String>", True),
    "teams": ("Set<String>", True),
    # The plugin namespaces a publisher may act on (``publisher@<namespace>`` roles).
    "namespaces": ("Set<String>", True),
    "location": ("String", False),
    # The backfill id, on a requester's principal when the daemon submits that backfill's
    # runs (``principal has backfill``).
    "backfill": ("String", False),
}
RESOURCE_ATTRIBUTES = {
    "kind": ("String", True),
    "name": ("String", True),
    "location": ("String", False),
    "group": ("String", False),
    "owner_team": ("String", False),
    "classification": ("String", False),
    "tenant": ("String", False),
    # A plugin release's namespace (``kind == "plugin"``).
    "namespace": ("String", False),
}


def role_group(role: str) -> str:
    return f"role/{role}"


def _attrs(spec: dict[str, tuple[str, bool]]) -> str:
    return ", ".join(
        f'"{name}"{"" if required else "?"}: {typ}' for name, (typ, required) in spec.items()
    )


def schema_text() -> str:
    """The Cedar schema (human-readable syntax)."""
    lines = [
        f"namespace {NAMESPACE} {{",
        "  entity Role;",
        "  entity Team;",
        f"  entity Principal in [Role, Team] = {{ {_attrs(PRINCIPAL_ATTRIBUTES)} }};",
        f"  entity Resource = {{ {_attrs(RESOURCE_ATTRIBUTES)} }};",
    ]
    # Role groups nest upwards: viewer's group is in launcher's, and so on.
    for lower, higher in itertools.pairwise(ROLE_ORDER):
        lines.append(
            f"  action {json.dumps(role_group(lower))} in [{json.dumps(role_group(higher))}];"
        )
    lines.append(f"  action {json.dumps(role_group(ROLE_ORDER[-1]))};")
    applies = "appliesTo { principal: [Principal], resource: [Resource] }"
    seen: set[str] = set()
    for role in ROLE_ORDER:
        for action in sorted(ROLE_ACTIONS[role] - seen):
            lines.append(
                f"  action {json.dumps(action)} in [{json.dumps(role_group(role))}] {applies};"
            )
        seen |= ROLE_ACTIONS[role]
    for role, actions in PLUGIN_ROLE_ACTIONS.items():
        lines.append(f"  action {json.dumps(role_group(role))};")
        for action in sorted(actions):
            lines.append(
                f"  action {json.dumps(action)} in [{json.dumps(role_group(role))}] {applies};"
            )
    for action in UNGROUPED_ACTIONS:
        lines.append(f"  action {json.dumps(action)} {applies};")
    lines.append("}")
    return "\n".join(lines) + "\n"
