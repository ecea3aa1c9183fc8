"""The authorizing run coordinator on a real instance: every submitted run is decided by
the policy, recorded in the audit log, tagged with its principal only on allow, and a
refused run never reaches the queue (FAILURE, the reason in its event log, the error to
the caller)."""

import sys
import threading

import dagster as dg
import pytest

from dataflare_platform.access.default_policy import DEFAULT_POLICY
from dataflare_platform.access.policy import POLICY_ENV_VAR
from dataflare_platform.access.principal import CURRENT_PRINCIPAL, PRINCIPAL_TAG, Principal
from dataflare_platform.instance.run_coordinator import AuthorizingRunCoordinator
from dataflare_platform_tests.instance.conftest import audit_entries, launch


def as_principal(principal: Principal):
    """Run the block as the web front does around a request: CURRENT_PRINCIPAL set."""

    class _Scope:
        def __enter__(self):
            self.token = CURRENT_PRINCIPAL.set(principal)

        def __exit__(self, *exc):
            CURRENT_PRINCIPAL.reset(self.token)

    return _Scope()


def user(name: str, *roles: str, teams=()) -> Principal:
    return Principal(
        name=name, kind="user", via="local", roles=frozenset(roles), groups=frozenset(teams)
    )


def as_webserver_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process imports dagster-webserver (how the coordinator tells a webserver's
    process), for this test only: other tests see ``sys.modules`` as it was."""
    import importlib

    monkeypatch.delitem(sys.modules, "dagster_webserver", raising=False)
    monkeypatch.setitem(
        sys.modules, "dagster_webserver", importlib.import_module("dagster_webserver")
    )


def only_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    runs = instance.get_runs()
    assert len(runs) == 1
    return runs[0]


def refused_event(instance: dg.DagsterInstance, run_id: str) -> str:
    records = instance.all_logs(run_id)
    messages = [r.message or "" for r in records]
    return "\n".join(m for m in messages if "may not launch" in m)


def test_the_shipped_instance_uses_the_coordinator_with_the_queue_settings(instance):
    coordinator = instance.run_coordinator
    assert isinstance(coordinator, AuthorizingRunCoordinator)
    assert coordinator.dequeue_interval_seconds == 1
    # The pools section still applies next to a custom coordinator.
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


def test_an_in_process_launch_is_the_host_and_out_of_band(instance, workspace, home, monkeypatch):
    # Outside any webserver process (other tests of the session import dagster_webserver,
    # which is how the coordinator tells an ungated webserver's launches apart).
    monkeypatch.delitem(sys.modules, "dagster_webserver", raising=False)
    result = launch(workspace, "nexmark_job")
    assert result["__typename"] == "LaunchRunSuccess", result
    run = instance.get_run_by_id(result["run"]["runId"])
    assert run.status == dg.DagsterRunStatus.QUEUED
    assert run.tags[PRINCIPAL_TAG] == "system:host"
    (entry,) = audit_entries(home)
    assert (entry.actor, entry.action, entry.subject) == (
        "system:host",
        "access_allowed",
        "job:nexmark_job",
    )
    assert entry.payload()["via"] == "host"
    assert entry.payload()["resource"]["group"] == "nexmark"
    assert "host out of band" in entry.payload()["reason"]


def test_a_launch_through_an_ungated_webserver_is_refused_naming_the_front(
    instance, workspace, home, monkeypatch
):
    # Inside a webserver process the front does not wrap (plain `dagster dev`): no user is
    # known, so the coordinator sees system:webserver, which the default policy refuses.
    as_webserver_process(monkeypatch)

    result = launch(workspace, "nexmark_job")
    assert result["__typename"] == "PythonError", result
    assert "system:webserver may not launch job 'nexmark_job'" in result["message"]
    assert "start the UI with `dataflare ui`" in result["message"]
    run = only_run(instance)
    assert run.status == dg.DagsterRunStatus.FAILURE
    assert PRINCIPAL_TAG not in run.tags
    (entry,) = audit_entries(home)
    assert (entry.actor, entry.action, entry.subject) == (
        "system:webserver",
        "access_denied",
        "job:nexmark_job",
    )
    assert "dataflare ui" in entry.payload()["reason"]


def test_a_policy_may_allow_the_ungated_webserver_explicitly(
    instance, workspace, home, tmp_path, monkeypatch
):
    as_webserver_process(monkeypatch)

    policy = tmp_path / "policy.cedar"
    policy.write_text(
        DEFAULT_POLICY
        + '\n@id("ungated webserver")\n'
        + 'permit (principal, action == Dataflare::Action::"launch", resource)\n'
        + 'when { principal.via == "host" && principal.name == "webserver" };\n'
    )
    monkeypatch.setenv(POLICY_ENV_VAR, str(policy))
    result = launch(workspace, "nexmark_job")
    assert result["__typename"] == "LaunchRunSuccess", result
    run = instance.get_run_by_id(result["run"]["runId"])
    assert run.tags[PRINCIPAL_TAG] == "system:webserver"
    (entry,) = audit_entries(home)
    assert entry.action == "access_allowed"
    assert "ungated webserver" in entry.payload()["reason"]


def test_a_launcher_through_the_front_launches_as_themself(instance, workspace, home):
    with as_principal(user("ana", "launcher")):
        result = launch(workspace, "nexmark_job")
    assert result["__typename"] == "LaunchRunSuccess", result
    run = instance.get_run_by_id(result["run"]["runId"])
    assert run.status == dg.DagsterRunStatus.QUEUED
    assert run.tags[PRINCIPAL_TAG] == "user:ana"
    (entry,) = audit_entries(home)
    assert (entry.actor, entry.action) == ("user:ana", "access_allowed")
    assert entry.payload()["policy_version"].startswith("cedar:")


def test_a_viewer_is_refused_and_the_run_never_queues(instance, workspace, home):
    with as_principal(user("vic", "viewer")):
        result = launch(workspace, "nexmark_job")
    assert result["__typename"] == "PythonError"
    assert "user:vic may not launch job 'nexmark_job'" in result["message"]
    assert "deny by default" in result["message"]
    run = only_run(instance)
    assert run.status == dg.DagsterRunStatus.FAILURE
    assert PRINCIPAL_TAG not in run.tags
    assert "user:vic may not launch" in refused_event(instance, run.run_id)
    (entry,) = audit_entries(home)
    assert (entry.actor, entry.action, entry.subject) == (
        "user:vic",
        "access_denied",
        "job:nexmark_job",
    )


@pytest.mark.parametrize(
    "tags",
    [
        {PRINCIPAL_TAG: "user:admin"},
        {"dataflare/client": "someone-else"},
    ],
)
def test_a_reserved_tag_is_refused_whoever_submits(instance, workspace, home, tags):
    result = launch(workspace, "nexmark_job", tags=tags)
    assert result["__typename"] == "PythonError"
    assert "reserved to the platform" in result["message"]
    assert only_run(instance).status == dg.DagsterRunStatus.FAILURE
    (entry,) = audit_entries(home)
    assert entry.action == "access_denied"
    assert "reserved" in entry.payload()["reason"]


def test_a_definition_tag_in_the_namespace_is_code_not_a_claim(instance, workspace, home):
    with as_principal(user("ana", "launcher")):
        plain = launch(workspace, "tagged_job")
        same = launch(workspace, "tagged_job", tags={"dataflare/kind": "replay"})
        other = launch(workspace, "tagged_job", tags={"dataflare/kind": "forged"})
    assert plain["__typename"] == "LaunchRunSuccess", plain
    assert {"key": "dataflare/kind", "value": "replay"} in plain["run"]["tags"]
    assert same["__typename"] == "LaunchRunSuccess", same
    assert other["__typename"] == "PythonError"
    assert "dataflare/kind: the dataflare/ tag namespace is reserved" in other["message"]


@pytest.mark.parametrize(
    "tag", ["dagster/sensor_name", "dagster/schedule_name", "dagster/backfill"]
)
def test_a_user_cannot_claim_to_be_automation(instance, workspace, home, tag):
    with as_principal(user("ana", "admin")):
        result = launch(workspace, "nexmark_job", tags={tag: "nexmark_sensor"})
    assert result["__typename"] == "PythonError"
    assert f"{tag}: only the daemon sets it" in result["message"]
    assert audit_entries(home)[-1].action == "access_denied"


def test_a_re_execution_inherits_its_parents_tags(instance, workspace, home):
    with as_principal(user("ana", "launcher")):
        first = launch(workspace, "nexmark_job")
    parent = instance.get_run_by_id(first["run"]["runId"])
    # The UI re-executes with the parent's tags, the platform's own among them.
    with as_principal(user("bo", "launcher")):
        again = launch(workspace, "nexmark_job", tags=dict(parent.tags), parent=parent.run_id)
    assert again["__typename"] == "LaunchRunSuccess", again
    child = instance.get_run_by_id(again["run"]["runId"])
    assert child.tags[PRINCIPAL_TAG] == "user:bo"
    # A different value is a claim, not an inheritance.
    with as_principal(user("bo", "launcher")):
        forged = launch(
            workspace, "nexmark_job", tags={PRINCIPAL_TAG: "user:root"}, parent=parent.run_id
        )
    assert forged["__typename"] == "PythonError"


SCOPED = """
@id("streaming launches nexmark")
permit (
  principal in Dataflare::Team::"streaming",
  action in Dataflare::Action::"role/launcher",
  resource
)
when { resource has group && resource.group == "nexmark" };

@id("nexmark sensor: its own group only")
permit (principal, action == Dataflare::Action::"launch", resource)
when {
  principal.kind == "sensor" && principal.via == "daemon" && principal.name == "nexmark_sensor"
  && resource has group && resource.group == "nexmark"
};

@id("tenant fence")
forbid (principal, action, resource)
when { resource has tenant && !principal.teams.contains(resource.tenant) };

@id("admins")
permit (principal in Dataflare::Role::"admin", action in Dataflare::Action::"role/admin", resource);
"""


@pytest.fixture
def scoped_policy(tmp_path, monkeypatch):
    path = tmp_path / "scoped.cedar"
    path.write_text(SCOPED)
    monkeypatch.setenv(POLICY_ENV_VAR, str(path))
    return path


def test_a_team_launches_in_its_group_only(instance, workspace, home, scoped_policy):
    with as_principal(user("ana", teams=("streaming",))):
        ok = launch(workspace, "nexmark_job")
        refused = launch(workspace, "billing_job")
    assert ok["__typename"] == "LaunchRunSuccess", ok
    assert refused["__typename"] == "PythonError"
    assert "may not launch job 'billing_job'" in refused["message"]
    denied = audit_entries(home)[-1]
    assert denied.payload()["resource"] == {
        "kind": "job",
        "name": "billing_job",
        "location": workspace.code_location_names[0],
        "group": "billing",
        "owner_team": "finance",
        "classification": "pii",
    }


def test_a_tenant_attribute_fences_even_an_admin(instance, workspace, home, scoped_policy):
    with as_principal(user("root", "admin")):
        fenced = launch(workspace, "acme_job")
    with as_principal(user("root", "admin", teams=("acme",))):
        member = launch(workspace, "acme_job")
    assert fenced["__typename"] == "PythonError"
    assert "tenant fence" in fenced["message"]
    assert member["__typename"] == "LaunchRunSuccess", member


def submit_from_daemon_thread(fn):
    """Run ``fn`` as the sensor daemon runs its submissions: in the daemon's submit worker
    thread of a process that runs the daemon controller. (The real daemon: e2e test.)"""
    import dagster._daemon.controller  # noqa: F401 - present in every daemon process

    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(result=fn()), name="sensor_submit_worker_0")
    thread.start()
    thread.join()
    return out["result"]


def test_a_sensor_outside_its_rights_is_refused(instance, workspace, home, scoped_policy):
    tags = {"dagster/sensor_name": "nexmark_sensor"}
    ok = submit_from_daemon_thread(lambda: launch(workspace, "nexmark_job", tags=tags))
    refused = submit_from_daemon_thread(lambda: launch(workspace, "billing_job", tags=tags))
    assert ok["__typename"] == "LaunchRunSuccess", ok
    assert instance.get_run_by_id(ok["run"]["runId"]).tags[PRINCIPAL_TAG] == (
        "sensor:nexmark_sensor"
    )
    assert refused["__typename"] == "PythonError"
    assert "sensor:nexmark_sensor may not launch job 'billing_job'" in refused["message"]
    allowed, denied = audit_entries(home)
    assert (allowed.actor, allowed.action) == ("sensor:nexmark_sensor", "access_allowed")
    assert (denied.actor, denied.action) == ("sensor:nexmark_sensor", "access_denied")
    assert denied.payload()["via"] == "daemon"


def test_a_sensor_in_the_default_policy_stays_in_its_location(instance, workspace, home):
    tags = {"dagster/sensor_name": "nexmark_sensor"}
    ok = submit_from_daemon_thread(lambda: launch(workspace, "billing_job", tags=tags))
    assert ok["__typename"] == "LaunchRunSuccess", ok
    assert (
        audit_entries(home)[-1]
        .payload()["reason"]
        .startswith("permitted by rule 'automation launches in its own location'")
    )


def test_a_daemon_run_may_not_carry_reserved_tags(instance, workspace, home):
    tags = {"dagster/sensor_name": "nexmark_sensor", PRINCIPAL_TAG: "user:root"}
    refused = submit_from_daemon_thread(lambda: launch(workspace, "nexmark_job", tags=tags))
    assert refused["__typename"] == "PythonError"
    assert "reserved to the platform" in refused["message"]


def test_a_policy_refused_at_load_denies_with_the_reason(
    instance, workspace, home, tmp_path, monkeypatch
):
    bad = tmp_path / "bad.cedar"
    bad.write_text(DEFAULT_POLICY + "\npermit (principal, action, resource);\n")
    monkeypatch.setenv(POLICY_ENV_VAR, str(bad))
    result = launch(workspace, "nexmark_job")
    assert result["__typename"] == "PythonError"
    assert "could not decide, denied" in result["message"]
    assert "decrypt" in result["message"]
    entry = audit_entries(home)[-1]
    assert entry.action == "access_denied"
    assert entry.payload()["policy_version"] == "unavailable"


def test_a_deployment_override_is_refused_and_audited_twice(instance, workspace, home):
    """The guard's own entry (paths, never values) and the access decision."""
    with as_principal(user("ana", "launcher")):
        result = launch(
            workspace,
            "nexmark_job",
            run_config={"resources": {"settings": {"config": {"folder": "/tmp/planted"}}}},
        )
    assert result["__typename"] == "PythonError"
    assert "DeploymentOverrideError" in result["message"]
    assert "resources.settings.config.folder" in result["message"]
    assert only_run(instance).status == dg.DagsterRunStatus.FAILURE
    decision, refusal = audit_entries(home)
    assert (decision.actor, decision.action) == ("user:ana", "access_denied")
    assert "resources.settings.config.folder" in decision.payload()["reason"]
    assert (refusal.actor, refusal.action) == ("user:ana", "deployment_override_refused")
    assert "/tmp/planted" not in decision.details + refusal.details


# -- backfill runs are decided as the backfill's requester --------------------------------
def _add_backfill(instance, backfill_id: str, tags=None) -> None:
    import time

    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

    instance.add_backfill(
        PartitionBackfill(
            backfill_id=backfill_id,
            status=BulkActionStatus.CANCELED,  # no daemon here; nothing picks it up
            from_failure=False,
            tags=tags or {},
            backfill_timestamp=time.time(),
        )
    )


def test_a_backfill_run_is_decided_as_its_requester_with_the_rights_held_now(
    instance, workspace, home
):
    from dataflare_platform.access.backfill_requester import REQUESTER_TAG
    from dataflare_platform.gateway.backfills import record_backfill_requesters
    from dataflare_platform.identity.local_users import LocalUsers
    from dataflare_platform.identity.store import IdentityStore

    users = LocalUsers(IdentityStore(home.root))
    users.add("ana", "a password of some length", frozenset({"launcher"}))
    refusals: list = []
    record_backfill_requesters(instance, refusals.append, lambda: "cedar:test")
    with as_principal(users.current("ana")):
        _add_backfill(instance, "bfana001")  # what the front does for launchPartitionBackfill
    value = instance.get_backfill("bfana001").tags[REQUESTER_TAG]
    tags = {"dagster/backfill": "bfana001", REQUESTER_TAG: value}

    ok = submit_from_daemon_thread(lambda: launch(workspace, "nexmark_job", tags=tags))
    assert ok["__typename"] == "LaunchRunSuccess", ok
    assert instance.get_run_by_id(ok["run"]["runId"]).tags[PRINCIPAL_TAG] == "user:ana"
    allowed = audit_entries(home)[-1]
    assert (allowed.actor, allowed.action) == ("user:ana", "access_allowed")
    assert allowed.payload()["backfill"] == "bfana001"
    assert allowed.payload()["submitted_by"] == "daemon"

    users.set_roles("ana", frozenset({"viewer"}))  # she lost the launcher role meanwhile
    refused = submit_from_daemon_thread(lambda: launch(workspace, "nexmark_job", tags=tags))
    assert refused["__typename"] == "PythonError"
    assert "user:ana (requester of backfill bfana001) may not launch" in refused["message"]
    denied = audit_entries(home)[-1]
    assert (denied.actor, denied.action) == ("user:ana", "access_denied")
    assert denied.payload()["backfill"] == "bfana001"
    assert not refusals


@pytest.mark.parametrize("key", ["dataflare/backfill_requester", "dagster/sensor_name"])
def test_a_caller_set_requester_or_daemon_tag_on_a_backfill_is_refused(instance, home, key):
    from dataflare_platform.errors import AccessDeniedError
    from dataflare_platform.gateway.backfills import record_backfill_requesters

    refusals: list = []
    record_backfill_requesters(instance, refusals.append, lambda: "cedar:test")
    with as_principal(user("bo", "launcher")), pytest.raises(AccessDeniedError) as err:
        _add_backfill(instance, "bfforged", {key: '{"id": "user:admin"}'})
    assert key in str(err.value)
    assert instance.get_backfill("bfforged") is None
    (decision,) = refusals
    assert decision.principal.id == "user:bo" and not decision.allowed


def test_a_backfill_the_front_did_not_record_is_refused_naming_why(instance, workspace, home):
    """A backfill made without the front (``dagster job backfill``, a script, a plain
    ``dagster dev`` whose own launches are refused) names nobody: its runs are refused, so
    an ungated webserver cannot launch through a backfill what it may not launch itself."""
    _add_backfill(instance, "bfhost01")  # made on the host: no requester recorded
    tags = {"dagster/backfill": "bfhost01"}
    refused = submit_from_daemon_thread(lambda: launch(workspace, "nexmark_job", tags=tags))
    assert refused["__typename"] == "PythonError", refused
    assert "backfill:bfhost01" in refused["message"]
    assert "no requester recorded" in refused["message"]
    entry = audit_entries(home)[-1]
    assert (entry.actor, entry.payload()["via"]) == ("backfill:bfhost01", "daemon")
    assert entry.action == "access_denied"
    assert "dataflare backfill" in entry.payload()["reason"]


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        '{"id": "user:admin", "kind": "user", "name": "ana", "via": "local"}',
        '{"id": "sensor:s", "kind": "sensor", "name": "s", "via": "daemon"}',
        '{"id": "user:a b", "kind": "user", "name": "a b", "via": "local"}',
    ],
)
def test_a_malformed_requester_record_is_refused(value):
    from dataflare_platform.access.backfill_requester import parse_requester

    with pytest.raises(ValueError):
        parse_requester(value)


def test_a_reexecuted_or_resumed_backfill_is_the_new_requesters(instance, home):
    """reexecutePartitionBackfill copies the parent's tags (its requester record
    included): the record is rewritten for who re-executes; resumePartitionBackfill sets
    the backfill back to REQUESTED: its later runs are the resumer's."""
    from dagster._core.execution.backfill import BulkActionStatus
    from dagster._core.storage.tags import PARENT_BACKFILL_ID_TAG

    from dataflare_platform.access.backfill_requester import REQUESTER_TAG, parse_requester
    from dataflare_platform.gateway.backfills import record_backfill_requesters

    refusals: list = []
    record_backfill_requesters(instance, refusals.append, lambda: "cedar:test")
    with as_principal(user("ana", "launcher")):
        _add_backfill(instance, "bfparent")
    inherited = dict(instance.get_backfill("bfparent").tags)
    with as_principal(user("bo", "launcher")):
        _add_backfill(instance, "bfchild1", {**inherited, PARENT_BACKFILL_ID_TAG: "bfparent"})
    child = instance.get_backfill("bfchild1")
    assert parse_requester(child.tags[REQUESTER_TAG]).id == "user:bo"

    with as_principal(user("cy", "launcher")):
        instance.update_backfill(child.with_status(BulkActionStatus.REQUESTED))
    resumed = instance.get_backfill("bfchild1")
    assert parse_requester(resumed.tags[REQUESTER_TAG]).id == "user:cy"
    with as_principal(user("dee", "launcher")):  # a cancel keeps the requester
        instance.update_backfill(resumed.with_status(BulkActionStatus.CANCELING))
    assert parse_requester(instance.get_backfill("bfchild1").tags[REQUESTER_TAG]).id == "user:cy"
    assert not refusals
