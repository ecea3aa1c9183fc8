"""The run coordinator that authorizes every submitted run before it is queued.

Configured in the instance's ``dagster.yaml`` (``run_coordinator:`` with this module and
:class:`AuthorizingRunCoordinator`), it sits on the one path every run takes into the
queue: launches from the UI and GraphQL, sensors, schedules, backfills, retries and
in-process submissions all call ``instance.submit_run``. For each run it

1. finds the submitting principal (:mod:`dataflare_platform.instance.submitters`: the web
   front's authenticated user, a daemon service principal, or the out-of-band host),
2. refuses tags only the platform may set (``dataflare/...``, and the daemon's own tags
   from a user) and run config that overrides deployment settings
   (:mod:`dataflare_platform.instance.run_config_guard`),
3. asks the policy (:func:`load_authorizer`) to ``launch`` the job, once per distinct set
   of attributes of the assets it materializes (group, owner team, classification,
   tenant), every one of which must be allowed,
4. records every decision, allowed or denied, in the audit log before acting on it, and
5. on allow writes :data:`PRINCIPAL_TAG` on the run and queues it; on deny raises
   :class:`AccessDeniedError`.

When ``submit_run`` raises, Dagster (1.13, ``instance.submit_run``) writes the error as an
engine event in the run's event log, marks the run FAILURE and re-raises to the caller: the
GraphQL client gets the error (a ``PythonError`` naming the reason), the sensor or schedule
tick fails with it, and a refused run never reaches the queue.

Only the instance and the environment are known here: the audit log is the home's
(``DATAFLARE_HOME``, resolved like every command) unless ``DATAFLARE_AUDIT_URL`` names
one, and the policy is ``DATAFLARE_POLICY``
or the shipped default. The audit log is the deployment's (``DATAFLARE_AUDIT_URL``, else
the home's ``audit.db``), the one the deployment-settings guard writes to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster._core.run_coordinator.base import SubmitRunContext
from dagster._core.run_coordinator.queued_run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

from dataflare_platform.access.backfill_requester import REQUESTER_TAG, parse_requester
from dataflare_platform.access.decisions import Decision, Resource
from dataflare_platform.access.policy import load_authorizer
from dataflare_platform.access.principal import PRINCIPAL_TAG, Principal
from dataflare_platform.compliance.access_log import AuditDecisionRecorder
from dataflare_platform.compliance.override_refusals import (
    deployment_audit_log,
    deployment_audit_url,
)
from dataflare_platform.errors import AccessDeniedError, DataflareError
from dataflare_platform.instance.run_config_guard import forbidden_overrides, refuse_overrides
from dataflare_platform.instance.submitters import (
    PARENT_RUN_ID_TAG,
    UNGATED_HINT,
    UNRECORDED_BACKFILL_HINT,
    is_ungated_webserver,
    is_unrecorded_backfill,
    refused_tags,
    submitting_principal,
)

UNIDENTIFIED = Principal(name="unidentified", kind="system", via="host")
ASSET_ATTRIBUTE_TAGS = ("classification", "tenant")


def _team(owners: Sequence[str]) -> str | None:
    teams = sorted(o.removeprefix("team:") for o in owners if o.startswith("team:"))
    return teams[0] if teams else None


def run_resources(run: DagsterRun, workspace: Any) -> list[Resource]:
    """The resources a launch of ``run`` acts on: its job, once per distinct set of
    attributes of the assets it materializes (read from the workspace's asset graph:
    group, ``team:`` owner, ``classification`` and ``tenant`` tags)."""
    origin = run.remote_job_origin
    location = origin.location_name if origin is not None else None
    base = {"kind": "job", "name": run.job_name, "location": location}
    attribute_sets: set[tuple[str | None, ...]] = set()
    graph = getattr(workspace, "asset_graph", None) if workspace is not None else None
    if graph is not None:
        nodes = graph.remote_asset_nodes_by_key
        if run.asset_selection:
            selected = [nodes[k] for k in run.asset_selection if k in nodes]
        else:
            selected = [n for n in nodes.values() if run.job_name in n.job_names]
        for node in selected:
            tags = node.tags or {}
            attribute_sets.add(
                (
                    node.group_name,
                    _team(node.owners or ()),
                    tags.get("classification"),
                    tags.get("tenant"),
                )
            )
    if not attribute_sets:
        return [Resource(**base)]
    return [
        Resource(**base, group=g, owner_team=t, classification=c, tenant=n)
        for g, t, c, n in sorted(attribute_sets, key=lambda s: tuple(x or "" for x in s))
    ]


class AuthorizingRunCoordinator(QueuedRunCoordinator):
    """A ``QueuedRunCoordinator`` (same config: ``dequeue_interval_seconds``,
    ``max_concurrent_runs``...) that queues a run only when the policy allows its
    submitter to launch it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recorders: dict[str, AuditDecisionRecorder] = {}

    def _recorder(self) -> AuditDecisionRecorder:
        url = deployment_audit_url()
        if url not in self._recorders:
            self._recorders[url] = AuditDecisionRecorder(deployment_audit_log(url=url))
        return self._recorders[url]

    def _parent_tags(self, run: DagsterRun) -> Mapping[str, str] | None:
        parent_id = run.parent_run_id or run.tags.get(PARENT_RUN_ID_TAG)
        parent = self._instance.get_run_by_id(parent_id) if parent_id else None
        return parent.tags if parent is not None else None

    def _code_tags(self, run: DagsterRun) -> Mapping[str, str]:
        """The job definition's own tags (from the run's job snapshot): code, not a
        caller's claim."""
        if not run.job_snapshot_id:
            return {}
        snapshot = self._instance.get_job_snapshot(run.job_snapshot_id)
        return dict(snapshot.tags or {}) if snapshot is not None else {}

    def _backfill_requester(self, principal: Principal) -> Principal:
        """The principal a backfill's run is authorized as: the user or service that
        requested the backfill at the front (recorded on the backfill by the front, read
        from the instance's backfill record, not from the run), with the rights it holds
        now and ``backfill`` set. A backfill the front did not record (made on the host:
        ``dagster job backfill``, a script, a webserver without the front) stays
        ``backfill:<id>`` via the daemon, which no rule of the default policy permits:
        otherwise a plain ``dagster dev``, whose own launches are refused, could launch
        anything as a backfill."""
        from dataflare_platform.home import ProjectHome
        from dataflare_platform.identity.current_rights import current_rights
        from dataflare_platform.identity.store import IdentityStore

        backfill = self._instance.get_backfill(principal.name)
        if backfill is None:
            raise DataflareError(f"backfill {principal.name} not found in the instance")
        value = (backfill.tags or {}).get(REQUESTER_TAG)
        if value is None:
            return principal
        try:
            recorded = parse_requester(value)
        except ValueError as err:
            raise DataflareError(f"backfill {principal.name}: {err}") from None
        store = IdentityStore(ProjectHome.resolve().root)
        return current_rights(recorded, store).model_copy(update={"backfill": principal.name})

    def decide(self, run: DagsterRun, workspace: Any) -> list[Decision]:
        """Every decision on this submission (all must allow). Never raises: a failure to
        decide is a denial whose reason says what failed."""
        origin = run.remote_job_origin
        location = origin.location_name if origin is not None else None
        principal = UNIDENTIFIED
        job = Resource(kind="job", name=run.job_name, location=location)
        try:
            principal = submitting_principal(run.tags, location)
            if principal.kind == "backfill" and principal.via == "daemon":
                principal = self._backfill_requester(principal)
            authorizer = load_authorizer()
            problems = refused_tags(
                run.tags, principal, self._parent_tags(run), self._code_tags(run)
            )
            overrides = forbidden_overrides(run.run_config or {})
            if overrides:
                problems.append("run config overrides deployment settings: " + ", ".join(overrides))
            if problems:
                return [
                    Decision(
                        principal=principal,
                        action="launch",
                        resource=job,
                        allowed=False,
                        policy_version=authorizer.policy_version,
                        reason="refused: " + "; ".join(problems),
                    )
                ]
            resources = run_resources(run, workspace)
            decisions = [authorizer.decide(principal, "launch", r) for r in resources]
            hint = (
                UNGATED_HINT
                if is_ungated_webserver(principal)
                else UNRECORDED_BACKFILL_HINT
                if is_unrecorded_backfill(principal)
                else None
            )
            if hint is not None:
                # Say why and what to do, in the error and the audit entry alike.
                decisions = [
                    d if d.allowed else d.model_copy(update={"reason": f"{d.reason}: {hint}"})
                    for d in decisions
                ]
            return decisions
        except Exception as err:  # deny, with the reason, on any failure
            reason = str(err) if isinstance(err, DataflareError) else type(err).__name__
            return [
                Decision(
                    principal=principal,
                    action="launch",
                    resource=job,
                    allowed=False,
                    policy_version="unavailable",
                    reason=f"could not decide, denied: {reason}"[:2000],
                )
            ]

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        if run.status != DagsterRunStatus.NOT_STARTED:
            return super().submit_run(context)  # already submitted: the base class no-ops
        decisions = self.decide(run, context.workspace)
        try:
            recorder = self._recorder()
            for decision in decisions:
                recorder.record(decision)
        except Exception as err:  # an unrecorded launch does not run
            raise AccessDeniedError(
                f"run {run.run_id} refused: its authorization could not be recorded in the "
                f"audit log ({type(err).__name__})"
            ) from None
        denied = [d for d in decisions if not d.allowed]
        principal = decisions[0].principal
        # A deployment override also gets its own audit entry and error
        # (deployment_override_refused, DeploymentOverrideError naming the paths).
        refuse_overrides(run.run_config or {}, run_id=run.run_id, actor=principal.id)
        if denied:
            reason = "; ".join(dict.fromkeys(d.reason for d in denied))
            who = principal.id
            if principal.backfill:
                who += f" (requester of backfill {principal.backfill})"
            raise AccessDeniedError(
                f"{who} may not launch job {run.job_name!r}: {reason} "
                f"(policy {denied[0].policy_version})"
            )
        self._instance.add_run_tags(run.run_id, {PRINCIPAL_TAG: principal.id})
        tagged = self._instance.get_run_by_id(run.run_id) or run
        return super().submit_run(context._replace(dagster_run=tagged))
