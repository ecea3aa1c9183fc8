"""What an authorizer is asked and what it answers, and where answers are recorded.

Every enforcement point (the web front for GraphQL mutations and page access, the run
coordinator for every submitted run, the CLI for host-side actions) builds a
:class:`Resource`, asks an :class:`Authorizer` for a :class:`Decision` on an action, and
hands the decision, allowed or denied, to a :class:`DecisionRecorder` (the audit log) before
acting on it.
"""

from __future__ import annotations

from typing import Literal, Protocol

from dataflare_platform.access.principal import Principal
from dataflare_platform.models import StrictModel

# The permissions the policy knows. Anything a front cannot map to one of these is denied.
Action = Literal[
    "view",  # read pages, runs, assets, logs
    "launch",  # submit a run or a backfill
    "terminate",  # terminate / cancel runs, cancel backfills
    "delete_run",  # delete runs
    "wipe_assets",  # wipe materializations, report events
    "toggle_automation",  # start / stop sensors and schedules, reset them
    "set_cursor",  # change a sensor's cursor
    "reload_location",  # reload a code location / the workspace
    "decrypt",  # read decrypted values of a classified column
    "admin",  # anything else (deny by default for every other role)
    # The plugin lifecycle (issue 20 §2; marketplace/lifecycle.py), on a ``plugin`` resource
    "plugin_submit",
    "plugin_scan",
    "plugin_approve",
    "plugin_publish",
    "plugin_deprecate",
    "plugin_yank",
    "plugin_revoke",
]
ResourceKind = Literal[
    "deployment",
    "location",
    "job",
    "asset",
    "sensor",
    "schedule",
    "run",
    "backfill",
    "column",
    "plugin",
]


class Resource(StrictModel):
    """The thing acted on, with the attributes policies may use."""

    kind: ResourceKind
    name: str
    location: str | None = None
    group: str | None = None
    owner_team: str | None = None
    classification: str | None = None
    tenant: str | None = None
    namespace: str | None = None  # a plugin release's publisher namespace


class Decision(StrictModel):
    principal: Principal
    action: Action
    resource: Resource
    allowed: bool
    policy_version: str
    reason: str


class Authorizer(Protocol):
    def decide(self, principal: Principal, action: Action, resource: Resource) -> Decision: ...


class DecisionRecorder(Protocol):
    def record(self, decision: Decision) -> None: ...
