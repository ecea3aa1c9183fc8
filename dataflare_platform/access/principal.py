"""The authenticated identity behind an action.

A principal is made only by the platform: by the authenticating front (a logged-in user or
a service token), or by the run coordinator for runs the daemon submits on behalf of a
sensor, schedule or backfill. It is never read from anything a caller can set (run tags,
``USER``), which is why the ``dataflare/`` tag namespace is reserved: a caller-supplied tag
in it is refused, and only the coordinator writes :data:`PRINCIPAL_TAG`.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from typing import Literal

from pydantic import field_validator

from dataflare_platform.models import StrictModel

RESERVED_TAG_PREFIX = "dataflare/"
PRINCIPAL_TAG = "dataflare/principal"
# Tags only Dagster's daemon writes (sensor, schedule, backfill runs): a caller setting one
# would claim to be automation (the run coordinator names daemon principals from them).
DAEMON_ORIGIN_TAGS = ("dagster/sensor_name", "dagster/schedule_name", "dagster/backfill")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+\-]{0,127}$")

PrincipalKind = Literal["user", "service", "sensor", "schedule", "backfill", "system"]
# How the identity was established: the login method, a service token, the daemon (for
# sensor/schedule/backfill principals) or the host (in-process paths that cannot be gated,
# recorded as out of band).
Via = Literal["local", "oidc", "ldap", "token", "daemon", "host"]
ROLES = ("viewer", "launcher", "editor", "admin")
# The plugin marketplace's roles (issue 20 §2), outside the viewer < admin ladder: an admin
# is not a reviewer, nor a publisher of anyone's namespace (separation of duties). A
# publisher is assigned per namespace, ``publisher@<namespace>`` in a role assignment
# (the roles of a local user or service token, or a group mapping): the namespaces are
# what the policy scopes it to (``principal.namespaces``); a bare ``publisher`` may act on
# no namespace.
PLUGIN_ROLES = ("publisher", "reviewer", "operator", "scanner")
SCOPED_ROLE = "publisher"
# The registry's namespace spelling (marketplace.repository.NAMESPACE).
NAMESPACE_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


def is_assignable_role(role: str) -> bool:
    """A role a role assignment may grant: a platform or plugin role, or
    ``publisher@<namespace>`` (a bare ``publisher`` would grant nothing)."""
    base, scoped, scope = role.partition("@")
    if scoped:
        return base == SCOPED_ROLE and bool(NAMESPACE_PATTERN.match(scope))
    return role in ROLES or (role in PLUGIN_ROLES and role != SCOPED_ROLE)


EXTERNAL_PROVIDERS = ("oidc", "ldap")


class Principal(StrictModel):
    """An authenticated actor: ``kind:name`` is its stable id in the audit log."""

    name: str
    kind: PrincipalKind
    via: Via
    roles: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    # The code location a sensor or schedule principal belongs to (set by the run
    # coordinator from the run's origin), so a policy can keep it to its own location.
    location: str | None = None
    # Set only by the run coordinator for a run the daemon submits for a backfill: the
    # backfill's id, on the principal of the user or service that requested it (the run is
    # authorized as the requester, with the rights the requester holds now).
    backfill: str | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(
                "a principal name is 1-128 characters of letters, digits and _.@+- "
                "starting with a letter or digit"
            )
        return value

    @field_validator("backfill")
    @classmethod
    def _safe_backfill(cls, value: str | None) -> str | None:
        if value is not None and not NAME_PATTERN.match(value):
            raise ValueError("a backfill id is letters, digits and _.@+-")
        return value

    @field_validator("roles", "groups")
    @classmethod
    def _safe_members(cls, value: frozenset[str]) -> frozenset[str]:
        for item in value:
            if not NAME_PATTERN.match(item):
                raise ValueError(f"role or group {item[:40]!r} has characters outside _.@+-")
        return value

    @property
    def role_names(self) -> frozenset[str]:
        """The roles without their scope (``publisher@acme`` is the ``publisher`` role):
        what the policy's ``Role`` entities are."""
        return frozenset(r.partition("@")[0] for r in self.roles)

    @property
    def namespaces(self) -> frozenset[str]:
        """The plugin namespaces the principal publishes in (``publisher@<namespace>``)."""
        return frozenset(
            scope
            for base, scoped, scope in (r.partition("@") for r in self.roles)
            if scoped and base == SCOPED_ROLE
        )

    @property
    def id(self) -> str:
        """``kind:name``; a user from an external directory is ``user:<via>/<name>``: the
        same name at another provider (or a local account) is another person, and ``/``
        is outside the name's characters, so no name can pose as a qualified one."""
        if self.via in EXTERNAL_PROVIDERS:
            return f"{self.kind}:{self.via}/{self.name}"
        return f"{self.kind}:{self.name}"


# The principal of the request being served (set by the web front around each request, so
# code running inside the webserver process, e.g. the run coordinator, knows who asked).
CURRENT_PRINCIPAL: ContextVar[Principal | None] = ContextVar("dataflare_principal", default=None)
