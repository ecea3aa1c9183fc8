"""What the Dagster UI may offer the signed-in principal, answered by the Cedar policy.

Dagster's webserver asks its request context for permissions (the ``permissions`` and
per-location ``permissions`` GraphQL fields the UI reads to disable buttons with a
reason, and ``has_permission*`` checks its own mutation resolvers make before acting). A
plain webserver answers from one ``read_only`` flag for everybody. Here each request's
context answers from the deployment's policy for that request's principal:

* every :class:`~dagster._core.workspace.permissions.Permissions` member maps to the
  policy :data:`Action` the front's mutation table (``mutations.py``) uses for the
  mutations Dagster gates with it; a member not in the table (added by a Dagster upgrade)
  maps to ``admin``, as an unmapped mutation does at the front;
* a location-scoped permission is decided for the location
  (``Resource(kind="location", name=loc, location=loc)``); the unscoped one is enabled
  only when the deployment resource and every loaded location allow it, because Dagster
  takes an enabled unscoped permission as "allowed everywhere" and stops looking;
* Dagster's per-definition checks (a job, sensor, schedule or asset) are decided for that
  definition with its location, the resource the front decides for the same mutation;
* a denied permission's ``disabled_reason`` names the policy permission and the lowest
  role holding it, which the UI shows in its tooltips.

Decisions are cached per request context (one context per GraphQL request), the actions
of one resource decided in one batch call into the engine, and kept across requests in a
bounded LRU owned by the webserver (:class:`DecisionCache`): a decision is a pure function
of the principal (with its roles), the action, the resource and the policy text, and the
policy is fixed for the webserver's life, so a changed role is a new key and nothing
stale is served. These decisions are not recorded in the audit log: they decide what the
UI shows; the front records the decision that lets a mutation through.
The front stays the enforcement point; these permissions are the display and a second
layer (Dagster's resolvers refuse with ``UnauthorizedError`` what they deny).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from dagster._core.definitions.asset_key import AssetCheckKey, AssetKey
from dagster._core.definitions.selector import JobSelector, ScheduleSelector, SensorSelector
from dagster._core.workspace.context import WorkspaceRequestContext
from dagster._core.workspace.permissions import (
    LOCATION_SCOPED_PERMISSIONS,
    PermissionResult,
    Permissions,
)

from dataflare_platform.access.cedar_schema import ROLE_ACTIONS, ROLE_ORDER
from dataflare_platform.access.decisions import Action, Authorizer, Resource
from dataflare_platform.access.principal import Principal
from dataflare_platform.gateway.mutations import DEPLOYMENT, UNKNOWN_MUTATION_ACTION

# Each Dagster permission -> the policy action of the mutations Dagster gates with it
# (the same action mutations.py gives those mutations; a test holds the two together).
PERMISSION_ACTIONS: dict[str, Action] = {
    Permissions.LAUNCH_PIPELINE_EXECUTION: "launch",  # launchRun, launchPipelineExecution
    Permissions.LAUNCH_PIPELINE_REEXECUTION: "launch",  # launchRunReexecution
    Permissions.LAUNCH_PARTITION_BACKFILL: "launch",  # launchPartitionBackfill, resume...
    # addDynamicPartition is "launch" at the front (a launcher adds the partition it runs);
    # deleteDynamicPartitions, gated by the same Dagster permission, is admin at the front.
    Permissions.EDIT_DYNAMIC_PARTITIONS: "launch",
    Permissions.TERMINATE_PIPELINE_EXECUTION: "terminate",  # terminateRun(s)
    Permissions.CANCEL_PARTITION_BACKFILL: "terminate",  # cancelPartitionBackfill
    Permissions.DELETE_PIPELINE_RUN: "delete_run",  # deleteRun
    Permissions.WIPE_ASSETS: "wipe_assets",  # wipeAssets
    Permissions.REPORT_RUNLESS_ASSET_EVENTS: "wipe_assets",  # reportRunlessAssetEvents
    Permissions.START_SCHEDULE: "toggle_automation",
    Permissions.STOP_RUNNING_SCHEDULE: "toggle_automation",
    Permissions.SCHEDULE_DRY_RUN: "toggle_automation",
    Permissions.EDIT_SENSOR: "toggle_automation",  # start/stop/resetSensor
    Permissions.SENSOR_DRY_RUN: "toggle_automation",
    Permissions.TOGGLE_AUTO_MATERIALIZE: "toggle_automation",  # setAutoMaterializePaused
    Permissions.UPDATE_SENSOR_CURSOR: "set_cursor",  # setSensorCursor
    Permissions.RELOAD_REPOSITORY_LOCATION: "reload_location",
    Permissions.RELOAD_WORKSPACE: "reload_location",
    Permissions.EDIT_CONCURRENCY_LIMIT: "admin",
    Permissions.EDIT_APP_MANAGED_COMPONENTS: "admin",
    Permissions.REFRESH_COMPONENT_STATE: "admin",
}
NO_PRINCIPAL_REASON = "No signed-in principal: sign in through the DataFlare front"


def action_for(permission: str) -> Action:
    """The policy action a Dagster permission stands for; ``admin`` when unmapped."""
    return PERMISSION_ACTIONS.get(permission, UNKNOWN_MUTATION_ACTION)


def role_for(action: Action) -> str:
    """The lowest role of the role table holding ``action`` (what to ask an admin for)."""
    for role in ROLE_ORDER:
        if action in ROLE_ACTIONS[role]:
            return role
    return "none"


def location_resource(location: str) -> Resource:
    return Resource(kind="location", name=location, location=location)


CacheKey = tuple[Principal, Action, Resource]


class DecisionCache:
    """Policy decisions kept across requests for one authorizer: bounded, least recently
    used out first, safe to share between the webserver's request threads."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, bool] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> bool | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: CacheKey, allowed: bool) -> None:
        with self._lock:
            self._entries[key] = allowed
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class PolicyPermissions:
    """The permissions of one principal, decided lazily and cached for one request (and
    in ``shared`` across requests when given)."""

    def __init__(
        self,
        authorizer: Authorizer,
        principal: Principal | None,
        shared: DecisionCache | None = None,
        all_permissions: tuple[str, ...] = tuple(Permissions),
    ) -> None:
        self.authorizer = authorizer
        self.principal = principal
        self.shared = shared
        self.all_permissions = all_permissions
        self._decisions: dict[tuple[Action, Resource], bool] = {}

    def decide(self, action: Action, resource: Resource) -> bool:
        found = self._decisions.get((action, resource))
        if found is None:
            self.prefetch((action,), resource)
            found = self._decisions[(action, resource)]
        return found

    def prefetch(self, actions: Sequence[Action], resource: Resource) -> None:
        """Decide every action in ``actions`` not yet known for ``resource``, those not
        in the shared cache in one batch call when the authorizer has one."""
        principal = self.principal
        missing = [a for a in dict.fromkeys(actions) if (a, resource) not in self._decisions]
        if principal is None:
            self._decisions.update({(a, resource): False for a in missing})
            return
        if self.shared is not None:
            for action in list(missing):
                cached = self.shared.get((principal, action, resource))
                if cached is not None:
                    self._decisions[(action, resource)] = cached
                    missing.remove(action)
        if not missing:
            return
        decide_many = getattr(self.authorizer, "decide_many", None)
        if decide_many is not None and len(missing) > 1:
            decisions = decide_many(principal, missing, resource)
        else:
            decisions = [self.authorizer.decide(principal, a, resource) for a in missing]
        for action, decision in zip(missing, decisions, strict=True):
            self._decisions[(action, resource)] = decision.allowed
            if self.shared is not None:
                self.shared.put((principal, action, resource), decision.allowed)

    def _reason(self, permission: str, where: str) -> str:
        if self.principal is None:
            return NO_PRINCIPAL_REASON
        action = action_for(permission)
        return (
            f"Needs permission '{action}' (role {role_for(action)}) {where}: "
            f"not granted to {self.principal.id} by the policy"
        )

    def for_location(self, location: str) -> dict[str, PermissionResult]:
        """The location-scoped permissions in ``location``."""
        resource = location_resource(location)
        scoped = [p for p in self.all_permissions if p in LOCATION_SCOPED_PERMISSIONS]
        self.prefetch([action_for(p) for p in scoped], resource)
        out = {}
        for permission in scoped:
            allowed = self.decide(action_for(permission), resource)
            reason = None if allowed else self._reason(permission, f"in location '{location}'")
            out[permission] = PermissionResult(enabled=allowed, disabled_reason=reason)
        return out

    def unscoped(self, locations: tuple[str, ...]) -> dict[str, PermissionResult]:
        """Every permission for the deployment as a whole: a location-scoped one only when
        it holds in every location (Dagster reads an enabled one as allowed everywhere)."""
        actions = [action_for(p) for p in self.all_permissions]
        self.prefetch(actions, DEPLOYMENT)
        for location in locations:
            self.prefetch(actions, location_resource(location))
        out = {}
        for permission in self.all_permissions:
            action = action_for(permission)
            if not self.decide(action, DEPLOYMENT):
                reason = self._reason(permission, "on the deployment")
                out[permission] = PermissionResult(enabled=False, disabled_reason=reason)
                continue
            denied = None
            if permission in LOCATION_SCOPED_PERMISSIONS:
                denied = next(
                    (loc for loc in locations if not self.decide(action, location_resource(loc))),
                    None,
                )
            reason = None if denied is None else self._reason(permission, f"in location '{denied}'")
            out[permission] = PermissionResult(enabled=denied is None, disabled_reason=reason)
        return out


class PolicyRequestContext(WorkspaceRequestContext):
    """Dagster's request context with permissions from the policy for one principal."""

    def __init__(self, *args: Any, policy: PolicyPermissions, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy
        self._unscoped: dict[str, PermissionResult] | None = None

    @classmethod
    def create(
        cls, process_context: Any, source: object, policy: PolicyPermissions
    ) -> PolicyRequestContext:
        """What ``WorkspaceProcessContext.create_request_context`` builds, with policy."""
        return cls(
            instance=process_context.instance,
            current_workspace=process_context.get_current_workspace(),
            process_context=process_context,
            version=process_context.version,
            source=source,
            read_only=False,
            policy=policy,
        )

    @property
    def principal(self) -> Principal | None:
        return self.policy.principal

    def _location_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.get_current_workspace().code_location_entries))

    @property
    def permissions(self) -> Mapping[str, PermissionResult]:
        if self._unscoped is None:
            self._unscoped = self.policy.unscoped(self._location_names())
        return self._unscoped

    def permissions_for_location(self, *, location_name: str) -> Mapping[str, PermissionResult]:
        return self.policy.for_location(location_name)

    def has_permission_for_selector(
        self,
        permission: str,
        selector: AssetKey | AssetCheckKey | JobSelector | ScheduleSelector | SensorSelector,
    ) -> bool:
        """Decided for the definition itself (the resource the front decides for the same
        mutation), so a policy scoped finer than a location shows and refuses alike."""
        self._checked_permissions.add(permission)
        resource = self._selector_resource(selector)
        if resource is None:
            return False
        return self.policy.decide(action_for(permission), resource)

    def _selector_resource(
        self,
        selector: AssetKey | AssetCheckKey | JobSelector | ScheduleSelector | SensorSelector,
    ) -> Resource | None:
        if isinstance(selector, (AssetKey, AssetCheckKey)):
            key = selector if isinstance(selector, AssetKey) else selector.asset_key
            if not self.asset_graph.has(key):
                return None
            location = self.asset_graph.get_repository_handle(key).location_name
            return Resource(kind="asset", name="/".join(key.path), location=location)
        if isinstance(selector, JobSelector):
            return Resource(kind="job", name=selector.job_name, location=selector.location_name)
        if isinstance(selector, ScheduleSelector):
            return Resource(
                kind="schedule", name=selector.schedule_name, location=selector.location_name
            )
        if isinstance(selector, SensorSelector):
            return Resource(
                kind="sensor", name=selector.sensor_name, location=selector.location_name
            )
        return None
