"""The authorizing run coordinator inside a real ``dagster-daemon``: a sensor's run is
launched under the sensor's own service principal, a sensor asking for a job its principal
may not launch is refused (the run FAILURE with the reason in its event log, never
queued), and both decisions are in the home's audit log."""

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from dataflare_platform.access.default_policy import DEFAULT_POLICY
from dataflare_platform.access.policy import POLICY_ENV_VAR
from dataflare_platform.access.principal import PRINCIPAL_TAG
from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.compliance.audit_keys import provision
from dataflare_platform.home import ProjectHome
from dataflare_platform_tests.e2e.conftest import stop_group

pytestmark = pytest.mark.e2e

DEFS = Path(__file__).with_name("authz_sensor_defs.py")

# The shipped policy with the automation rule narrowed: sensors launch in group nexmark.
POLICY = DEFAULT_POLICY.replace(
    "  principal.location == resource.location\n};",
    "  principal.location == resource.location &&\n"
    '  resource has group && resource.group == "nexmark"\n};',
)


@pytest.fixture(scope="module")
def daemon_home(tmp_path_factory):
    assert POLICY != DEFAULT_POLICY
    root = tmp_path_factory.mktemp("authz_daemon")
    project = ProjectHome.resolve(root / "home").ensure()
    policy = root / "policy.cedar"
    policy.write_text(POLICY)
    env = {**os.environ, **project.environ(), POLICY_ENV_VAR: str(policy)}
    # The coordinator records every decision before a run may queue, and every append
    # needs the home's entry key: provisioned as `dataflare audit init` does, outside the
    # home, in a config dir of this module's own.
    env["XDG_CONFIG_HOME"] = str(root / "xdg-config")
    env = {k: v for k, v in env.items() if not k.startswith("DATAFLARE_AUDIT_")}
    provision(project.root, environ=env)
    log_path = root / "daemon.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("dagster-daemon")),
                "run",
                *("-f", str(DEFS), "-a", "defs", "-d", str(DEFS.parent)),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its code server dies with it (one process group)
        )
        try:
            with pytest.MonkeyPatch.context() as patch:
                for key, value in project.environ().items():
                    patch.setenv(key, value)
                with dg.DagsterInstance.get() as instance:
                    yield project, instance, log_path
        finally:
            stop_group(proc, 30)


def wait_for_run(instance, job: str, statuses, log_path: Path, ceiling_s: float = 180):
    deadline = time.monotonic() + ceiling_s
    while time.monotonic() < deadline:
        runs = instance.get_runs(dg.RunsFilter(job_name=job))
        if runs and runs[0].status in statuses:
            return runs[0]
        time.sleep(0.5)
    pytest.fail(f"no {job} run in {statuses} after {ceiling_s:g} s: {log_path.read_text()[-3000:]}")


def test_a_sensor_launches_what_it_may(daemon_home):
    project, instance, log_path = daemon_home
    run = wait_for_run(instance, "nexmark_job", {dg.DagsterRunStatus.SUCCESS}, log_path)
    assert run.tags[PRINCIPAL_TAG] == "sensor:nexmark_sensor"
    entries = AuditLog(f"sqlite:///{project.root / 'audit.db'}").tail(50)
    allowed = [e for e in entries if e.actor == "sensor:nexmark_sensor"]
    assert [e.action for e in allowed] == ["access_allowed"]
    assert allowed[0].payload()["via"] == "daemon"


def test_a_sensor_outside_its_rights_is_refused_and_audited(daemon_home):
    project, instance, log_path = daemon_home
    run = wait_for_run(instance, "billing_job", {dg.DagsterRunStatus.FAILURE}, log_path)
    assert PRINCIPAL_TAG not in run.tags
    messages = [r.message or "" for r in instance.all_logs(run.run_id)]
    assert any("sensor:rogue_sensor may not launch job 'billing_job'" in m for m in messages)
    # Never queued, never started.
    kinds = {
        r.dagster_event.event_type_value for r in instance.all_logs(run.run_id) if r.dagster_event
    }
    assert "PIPELINE_ENQUEUED" not in kinds and "PIPELINE_START" not in kinds
    entries = AuditLog(f"sqlite:///{project.root / 'audit.db'}").tail(50)
    denied = [e for e in entries if e.actor == "sensor:rogue_sensor"]
    assert denied and {e.action for e in denied} == {"access_denied"}
    assert denied[0].payload()["resource"]["group"] == "billing"
    assert denied[0].payload()["policy_version"].startswith("cedar:")
