"""A launch through the web server's GraphQL API (the path of the UI's launchpad, the
client and ``dataflare launch``) that overrides a deployment setting is refused and
audited, against the real front (``dataflare ui``: web server app, daemon, code server,
run workers), launched with the home's service token.

Whichever lock catches it — the run coordinator at submit (the launch is refused) or the
resources at execution (the run fails before any step body) — the planted folder is never
used and the deployment's audit log records the attempt."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import dagster as dg
import pytest

from dataflare_platform.client import DataflareClient
from dataflare_platform.client.errors import DataflareClientError
from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.compliance.audit_keys import provision
from dataflare_platform.compliance.override_refusals import ACTION
from dataflare_platform.home import ProjectHome
from dataflare_platform_tests.e2e.conftest import serving_front

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[DataflareClient, ProjectHome]]:
    root = tmp_path_factory.mktemp("override_home")
    project = ProjectHome.resolve(root / "home").ensure()
    # The audit checkpoint job signs with a provisioned key (`dataflare audit init`),
    # kept in a per-user config dir: a tmp one here.
    xdg = {"XDG_CONFIG_HOME": str(root / "xdg")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", xdg["XDG_CONFIG_HOME"])
        provision(project.root)
    env = {**os.environ, **xdg}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in project.environ().items():
            patch.setenv(key, value)  # the instance's dagster.yaml reads DAGSTER_HOME
        with serving_front(project, root / "front.log", env=env) as front:
            yield DataflareClient(port=front.port, timeout_s=60, token=front.token), project


def _refusals(home: ProjectHome, run_id: str | None = None) -> list:
    with AuditLog(f"sqlite:///{home.root / 'audit.db'}") as log:
        entries = [e for e in log.tail(200) if e.action == ACTION]
    return [e for e in entries if run_id is None or e.subject == f"run:{run_id}"]


def _run_errors(home: ProjectHome, run_id: str) -> str:
    """The errors the run's events carry, read from the instance's event log."""
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        return "\n".join(str(entry) for entry in instance.all_logs(run_id))


def _launch_refused(
    client: DataflareClient, home: ProjectHome, job: str, run_config: dict, path: str
) -> str | None:
    """Launch; return the run id when the launch was accepted (then it must fail), None
    when the submission itself was refused naming ``path``."""
    try:
        run_id = client.launch_job(job, run_config=run_config)
    except DataflareClientError as err:
        assert path in str(err)
        return None
    assert client.wait(run_id, timeout_s=RUN_TIMEOUT_S) == "FAILURE"
    errors = _run_errors(home, run_id)
    assert "DeploymentOverrideError" in errors and path in errors
    return run_id


@pytest.mark.parametrize(
    ("resource", "field"),
    [("governance", "audit_url"), ("dataflare", "path")],
)
def test_graphql_launch_with_an_override_is_refused_and_audited(served, tmp_path, resource, field):
    client, home = served
    planted = tmp_path / "planted"
    path = f"resources.{resource}.config.{field}"
    run_config = {"resources": {resource: {"config": {field: str(planted)}}}}
    before = len(_refusals(home))
    run_id = _launch_refused(client, home, "audit_checkpoint_job", run_config, path)
    entries = _refusals(home, run_id) if run_id else _refusals(home)[before:]
    assert entries, "the refusal was not audited"
    assert path in json.loads(entries[-1].details)["paths"]
    assert not planted.exists()


def test_a_clean_graphql_launch_still_runs(served):
    client, _home = served
    run_id = client.launch_job("audit_checkpoint_job")
    assert client.wait(run_id, timeout_s=RUN_TIMEOUT_S) == "SUCCESS"
