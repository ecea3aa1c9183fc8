"""The UI's permissions come from the Cedar policy for each request's principal: Dagster's
own ``permissions`` GraphQL fields (what the UI disables, with the reason) answer per
principal and per code location, and Dagster's resolvers refuse exactly what the front
refuses. Real dagster-webserver app, real instance, two in-process code locations, the
shipped default policy and a location-scoped one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.testclient import TestClient

from dataflare_platform.access.policy import CedarAuthorizer, load_authorizer
from dataflare_platform.access.principal import Principal
from dataflare_platform.home import ProjectHome
from dataflare_platform.identity.store import IdentityStore
from dataflare_platform.identity.tokens import ServiceTokens
from dataflare_platform_tests.gateway.conftest import BASE, PORT, tiny_workspace

ROLES = ("viewer", "launcher", "editor", "admin")
LOCATIONS = ("tiny", "other")
# Launchers may launch and terminate only in location "tiny" (and view everything).
SCOPED_POLICY = """
@id("viewers")
permit (principal in Dataflare::Role::"viewer", action in Dataflare::Action::"role/viewer",
  resource);
@id("launchers view")
permit (principal in Dataflare::Role::"launcher", action == Dataflare::Action::"view",
  resource);
@id("launchers act in tiny")
permit (principal in Dataflare::Role::"launcher", action in Dataflare::Action::"role/launcher",
  resource)
when { resource has location && resource.location == "tiny" };
@id("editors")
permit (principal in Dataflare::Role::"editor", action in Dataflare::Action::"role/editor",
  resource);
@id("admins")
permit (principal in Dataflare::Role::"admin", action in Dataflare::Action::"role/admin",
  resource);
"""
PERMISSIONS = """{
  permissions { permission value disabledReason }
  locationStatusesOrError { __typename ... on WorkspaceLocationStatusEntries {
    entries { name permissions { permission value disabledReason } } } }
}"""
JOB_PERMISSION = """query Job($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) { __typename ... on Pipeline {
    hasLaunchExecutionPermission } } }"""
LAUNCH = """mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) { __typename } }"""
SET_CURSOR = """mutation Cursor($selector: SensorSelector!) {
  setSensorCursor(sensorSelector: $selector, cursor: "7") { __typename } }"""
START_SENSOR = """mutation Start($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) { __typename } }"""


def _job(location: str) -> dict[str, str]:
    return {
        "repositoryLocationName": location,
        "repositoryName": "__repository__",
        "pipelineName": "tiny_job",
    }


def _sensor(location: str) -> dict[str, str]:
    return {
        "repositoryLocationName": location,
        "repositoryName": "__repository__",
        "sensorName": "tiny_sensor",
    }


def _launch_vars(location: str) -> dict[str, Any]:
    selector = {**_job(location), "jobName": "tiny_job"}
    del selector["pipelineName"]
    return {"params": {"selector": selector, "runConfigData": {}}}


@dataclass
class Deployment:
    """One webserver app behind a front, both deciding with ``authorizer``."""

    front: Any
    webserver_app: Any
    tokens: dict[str, str]
    principals: dict[str, Principal]

    def post(self, role: str, query: str, variables: dict | None = None) -> dict:
        with TestClient(self.front, base_url=BASE) as client:
            answer = client.post(
                "/graphql",
                json={"query": query, "variables": variables or {}},
                headers={"Authorization": f"Bearer {self.tokens[role]}"},
            )
        assert answer.status_code == 200, answer.text
        return answer.json()

    def post_to_dagster(self, role: str, query: str, variables: dict | None = None) -> dict:
        """The same request straight to the webserver app, the principal set as the front
        sets it: what Dagster's own resolvers decide when nothing stands in front."""
        app, principal = self.webserver_app, self.principals[role]

        async def as_principal(scope, receive, send):
            scope = {**scope, "state": {"dataflare_principal": principal}}
            await app(scope, receive, send)

        with TestClient(as_principal, base_url=BASE) as client:
            answer = client.post("/graphql", json={"query": query, "variables": variables or {}})
        return answer.json()


@pytest.fixture(scope="module")
def deployments(tmp_path_factory) -> Iterator[dict[str, Deployment]]:
    from dataflare_platform.gateway.serve import build_front
    from dataflare_platform.gateway.settings import FrontSettings
    from dataflare_platform.gateway.webserver import GatedWebserver

    root = tmp_path_factory.mktemp("ui-permissions")
    project = ProjectHome.resolve(root / "home").ensure()
    service_tokens = ServiceTokens(IdentityStore(project.root))
    tokens = {role: service_tokens.create(f"{role}-bot", frozenset({role}))[1] for role in ROLES}
    principals = {role: service_tokens.authenticate(token) for role, token in tokens.items()}
    with tiny_workspace(project, LOCATIONS) as (instance, context):
        out = {}
        for name, authorizer in (
            ("default", load_authorizer(environ={})),
            ("scoped", CedarAuthorizer(SCOPED_POLICY, source="scoped")),
        ):
            app = GatedWebserver(context, "", 2000, authorizer=authorizer).create_asgi_app()
            front = build_front(
                app, FrontSettings(port=PORT), project, instance, authorizer=authorizer
            )
            out[name] = Deployment(front, app, tokens, principals)
        yield out


def _by_name(items: list[dict]) -> dict[str, dict]:
    return {item["permission"]: item for item in items}


def _answer(deployment: Deployment, role: str) -> tuple[dict, dict[str, dict]]:
    body = deployment.post(role, PERMISSIONS)
    assert "errors" not in body, body
    unscoped = _by_name(body["data"]["permissions"])
    entries = body["data"]["locationStatusesOrError"]["entries"]
    return unscoped, {e["name"]: _by_name(e["permissions"]) for e in entries}


def test_viewer_may_not_launch_and_the_reason_names_permission_and_role(deployments):
    unscoped, locations = _answer(deployments["default"], "viewer")
    launch = unscoped["launch_pipeline_execution"]
    assert launch["value"] is False
    assert "'launch'" in launch["disabledReason"] and "role launcher" in launch["disabledReason"]
    assert "service:viewer-bot" in launch["disabledReason"]
    for name in LOCATIONS:
        here = locations[name]["launch_pipeline_execution"]
        assert here["value"] is False
        assert f"in location '{name}'" in here["disabledReason"]
        assert "role launcher" in here["disabledReason"]
        cursor = locations[name]["update_sensor_cursor"]
        assert cursor["value"] is False and "'set_cursor' (role editor)" in cursor["disabledReason"]
    # Every permission Dagster knows is answered, none left enabled for a viewer.
    assert not [p for p, item in unscoped.items() if item["value"]]


def test_launcher_launches_but_does_not_edit_sensors(deployments):
    unscoped, locations = _answer(deployments["default"], "launcher")
    assert unscoped["launch_pipeline_execution"]["value"] is True
    assert unscoped["launch_pipeline_execution"]["disabledReason"] is None
    assert unscoped["terminate_pipeline_execution"]["value"] is True
    assert unscoped["edit_sensor"]["value"] is False
    assert "'toggle_automation' (role editor)" in unscoped["edit_sensor"]["disabledReason"]
    assert unscoped["delete_pipeline_run"]["value"] is False
    for name in LOCATIONS:
        assert locations[name]["launch_pipeline_execution"]["value"] is True


def test_admin_may_do_everything_dagster_offers(deployments):
    unscoped, locations = _answer(deployments["default"], "admin")
    from dagster._core.workspace.permissions import Permissions

    # EDIT_APP_MANAGED_COMPONENTS is admin in the policy: granted (Dagster+ feature, inert).
    assert {p for p, item in unscoped.items() if item["value"]} == {str(p) for p in Permissions}
    for name in LOCATIONS:
        assert all(item["value"] for item in locations[name].values())


def test_a_location_scoped_policy_shows_launch_only_where_it_holds(deployments):
    scoped = deployments["scoped"]
    unscoped, locations = _answer(scoped, "launcher")
    # Not everywhere, so not unscoped (Dagster would read that as every location).
    launch = unscoped["launch_pipeline_execution"]
    assert launch["value"] is False and "'launch' (role launcher)" in launch["disabledReason"]
    assert locations["tiny"]["launch_pipeline_execution"]["value"] is True
    other = locations["other"]["launch_pipeline_execution"]
    assert other["value"] is False and "in location 'other'" in other["disabledReason"]
    # The job page's own flag (what the Launchpad tab and launch button read).
    flags = {
        name: scoped.post("launcher", JOB_PERMISSION, {"selector": _job(name)})["data"][
            "pipelineOrError"
        ]["hasLaunchExecutionPermission"]
        for name in LOCATIONS
    }
    assert flags == {"tiny": True, "other": False}
    # The admin still has it everywhere.
    unscoped, _ = _answer(scoped, "admin")
    assert unscoped["launch_pipeline_execution"]["value"] is True


@pytest.mark.parametrize("policy", ["default", "scoped"])
def test_dagster_refuses_exactly_what_the_front_refuses(deployments, policy):
    deployment = deployments[policy]
    cases = [("launchRun", LAUNCH, _launch_vars(name)) for name in LOCATIONS] + [
        (field, query, {"selector": _sensor(name)})
        for name in LOCATIONS
        for field, query in (("setSensorCursor", SET_CURSOR), ("startSensor", START_SENSOR))
    ]
    seen = []
    for role in ROLES:
        for field, query, variables in cases:
            front = deployment.post(role, query, variables)
            front_denied = any(
                e.get("extensions", {}).get("code") == "PERMISSION_DENIED"
                for e in front.get("errors", [])
            )
            dagster = deployment.post_to_dagster(role, query, variables)
            kind = dagster["data"][field]["__typename"]
            assert front_denied == (kind == "UnauthorizedError"), (role, field, variables, kind)
            if not front_denied:
                assert "errors" not in front, front
                assert front["data"][field]["__typename"] == kind
            seen.append((role, field, front_denied))
    # Both verdicts occur, for every mutation.
    assert {(field, denied) for _, field, denied in seen} == {
        (field, denied)
        for field in ("launchRun", "setSensorCursor", "startSensor")
        for denied in (True, False)
    }


def test_without_a_principal_nothing_is_permitted(deployments):
    app = deployments["default"].webserver_app
    with TestClient(app, base_url=BASE) as client:
        body = client.post("/graphql", json={"query": PERMISSIONS}).json()
    unscoped = _by_name(body["data"]["permissions"])
    assert not [p for p, item in unscoped.items() if item["value"]]
    assert "No signed-in principal" in unscoped["launch_pipeline_execution"]["disabledReason"]


def test_every_dagster_permission_maps_to_the_action_of_the_mutations_it_gates():
    from dagster._core.workspace.permissions import Permissions

    from dataflare_platform.gateway.mutations import MUTATION_ACTIONS
    from dataflare_platform.gateway.ui_permissions import PERMISSION_ACTIONS

    assert set(PERMISSION_ACTIONS) == {str(p) for p in Permissions}
    # Mutations Dagster gates with each permission (dagster_graphql 1.13 schema/roots/
    # mutation.py); deleteDynamicPartitions is admin at the front, stricter than here.
    gated_by = {
        Permissions.LAUNCH_PIPELINE_EXECUTION: ["launchRun", "launchPipelineExecution"],
        Permissions.LAUNCH_PIPELINE_REEXECUTION: ["launchRunReexecution"],
        Permissions.LAUNCH_PARTITION_BACKFILL: [
            "launchPartitionBackfill",
            "resumePartitionBackfill",
            "reexecutePartitionBackfill",
        ],
        Permissions.EDIT_DYNAMIC_PARTITIONS: ["addDynamicPartition"],
        Permissions.TERMINATE_PIPELINE_EXECUTION: ["terminateRun", "terminateRuns"],
        Permissions.CANCEL_PARTITION_BACKFILL: ["cancelPartitionBackfill"],
        Permissions.DELETE_PIPELINE_RUN: ["deleteRun"],
        Permissions.WIPE_ASSETS: ["wipeAssets"],
        Permissions.REPORT_RUNLESS_ASSET_EVENTS: ["reportRunlessAssetEvents"],
        Permissions.START_SCHEDULE: ["startSchedule"],
        Permissions.STOP_RUNNING_SCHEDULE: ["stopRunningSchedule"],
        Permissions.SCHEDULE_DRY_RUN: ["scheduleDryRun"],
        Permissions.EDIT_SENSOR: ["startSensor", "stopSensor", "resetSensor"],
        Permissions.SENSOR_DRY_RUN: ["sensorDryRun"],
        Permissions.UPDATE_SENSOR_CURSOR: ["setSensorCursor"],
        Permissions.TOGGLE_AUTO_MATERIALIZE: ["setAutoMaterializePaused"],
        Permissions.RELOAD_REPOSITORY_LOCATION: ["reloadRepositoryLocation"],
        Permissions.RELOAD_WORKSPACE: ["reloadWorkspace"],
    }
    for permission, fields in gated_by.items():
        for field in fields:
            assert MUTATION_ACTIONS[field] == PERMISSION_ACTIONS[permission], (permission, field)
    for permission in set(Permissions) - set(gated_by):
        assert PERMISSION_ACTIONS[permission] == "admin", permission


def test_the_shared_decision_cache_keys_on_the_principal_and_stays_bounded():
    """Decisions kept across requests: a principal whose roles changed is another key (no
    stale answer), and the cache holds at most its bound."""
    from dataflare_platform.gateway.ui_permissions import (
        DecisionCache,
        PolicyPermissions,
        location_resource,
    )

    authorizer = load_authorizer(environ={})
    cache = DecisionCache(max_entries=8)
    before = Principal(name="vera", kind="user", via="local", roles=frozenset({"viewer"}))
    after = before.model_copy(update={"roles": frozenset({"launcher"})})
    tiny = location_resource("tiny")
    assert PolicyPermissions(authorizer, before, cache).decide("launch", tiny) is False
    assert PolicyPermissions(authorizer, after, cache).decide("launch", tiny) is True
    assert PolicyPermissions(authorizer, before, cache).decide("launch", tiny) is False
    PolicyPermissions(authorizer, after, cache).for_location("other")
    assert len(cache) <= 8
