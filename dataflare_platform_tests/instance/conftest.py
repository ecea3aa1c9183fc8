"""A real Dagster instance on a project home whose dagster.yaml is the shipped one (so the
authorizing run coordinator is the one under test), a workspace loading ``authz_defs``,
and a launch through Dagster's own GraphQL schema (the code path the webserver runs)."""

import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import in_process_test_workspace
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster_graphql.test.utils import execute_dagster_graphql

from dataflare_platform.access.policy import POLICY_ENV_VAR
from dataflare_platform.compliance.audit import AuditEntry, AuditLog
from dataflare_platform.compliance.audit_keys import provision
from dataflare_platform.home import ProjectHome

DEFS_FILE = Path(__file__).with_name("authz_defs.py")

LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status tags { key value } } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


@pytest.fixture
def home(tmp_path, monkeypatch) -> ProjectHome:
    project = ProjectHome.resolve(tmp_path / "home").ensure()
    for key, value in project.environ().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(POLICY_ENV_VAR, raising=False)
    # The coordinator records every decision, and every append needs the home's audit
    # entry key: provisioned as `dataflare ui`'s first start does, in a per-test config dir.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    for key in [k for k in os.environ if k.startswith("DATAFLARE_AUDIT_")]:
        monkeypatch.delenv(key)
    provision(project.root)
    return project


@pytest.fixture
def instance(home) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as inst:
        yield inst


@pytest.fixture
def workspace(instance):
    origin = LoadableTargetOrigin(
        executable_path=sys.executable,
        python_file=str(DEFS_FILE),
        attribute="defs",
        working_directory=str(DEFS_FILE.parent),
    )
    with in_process_test_workspace(instance, origin) as ws:
        yield ws


def launch(
    ws,
    job: str,
    tags: Mapping[str, str] | None = None,
    parent: str | None = None,
    run_config: dict | None = None,
):
    """``launchRun`` as the web UI sends it; the GraphQL result's ``launchRun`` field."""
    metadata: dict = {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
    if parent:
        metadata.update(parentRunId=parent, rootRunId=parent)
    params = {
        "selector": {
            "repositoryLocationName": ws.code_location_names[0],
            "repositoryName": "__repository__",
            "jobName": job,
        },
        "runConfigData": run_config or {},
        "executionMetadata": metadata,
    }
    result = execute_dagster_graphql(ws, LAUNCH, {"executionParams": params})
    assert not result.errors, result.errors
    return result.data["launchRun"]


def audit_entries(home: ProjectHome, n: int = 20) -> list[AuditEntry]:
    return AuditLog(f"sqlite:///{home.root / 'audit.db'}").tail(n)
