"""Deployment settings refused at execution, whatever path launched the run: in-process
(``execute_in_process`` / ``materialize``) and ``dagster job execute -c`` on the host —
paths no run coordinator sees. Real instance, real resources, real audit log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.compliance.audit_keys import provision
from dataflare_platform.compliance.override_refusals import ACTION
from dataflare_platform.defs.governance.resources import GovernanceResource
from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.errors import DeploymentOverrideError
from dataflare_platform.home import HOME_ENV_VAR, ProjectHome


@dg.asset
def uses_everything(
    dataflare: ProjectHomeResource, governance: GovernanceResource, plugins: PluginRuntimeResource
) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={
            "home": dataflare.path,
            "plugin_dir": plugins.plugin_dir,
            "audit_url": governance.audit_url,
        }
    )


def _deployment_resources() -> dict:
    """The resources as the code location binds them (read after the test's env is set)."""
    home = ProjectHomeResource(path=dg.EnvVar(HOME_ENV_VAR))
    return {
        "dataflare": home,
        "governance": GovernanceResource.from_environment(dataflare=home),
        "plugins": PluginRuntimeResource.from_environment(),
    }


def _refusals(home: ProjectHome) -> list:
    with AuditLog(f"sqlite:///{home.root / 'audit.db'}") as log:
        return [e for e in log.tail(100) if e.action == ACTION]


def _materialize(run_config, instance, tags=None):
    return dg.materialize(
        [uses_everything],
        resources=_deployment_resources(),
        run_config=run_config,
        instance=instance,
        tags=tags,
        raise_on_error=False,
    )


def _failure_text(result) -> str:
    return "\n".join(
        str(event.event_specific_data.error.to_string())
        for event in result.all_events
        if event.is_failure and event.event_specific_data.error is not None
    )


@pytest.fixture(autouse=True)
def _audit_keys(home):
    """Refusals are audited, and every append needs the home's entry key."""
    provision(home.root)


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def test_a_clean_run_uses_the_deployment_values(home, instance, monkeypatch):
    monkeypatch.setenv("DATAFLARE_PLUGIN_DIR", str(home.root / "reviewed_plugins"))
    result = _materialize({}, instance)
    assert result.success
    metadata = result.asset_materializations_for_node("uses_everything")[0].metadata
    assert metadata["home"].value == str(home.root)
    assert metadata["plugin_dir"].value == str(home.root / "reviewed_plugins")
    assert _refusals(home) == []


@pytest.mark.parametrize(
    ("resource", "field", "env"),
    [
        ("dataflare", "path", None),
        ("plugins", "plugin_dir", None),  # env unset: the default ('' = <home>/plugins)
        ("plugins", "plugin_dir", "DATAFLARE_PLUGIN_DIR"),  # env set: EnvVar-bound
        ("plugins", "memory_mb", "DATAFLARE_PLUGIN_MEMORY_MB"),
        ("governance", "audit_url", None),
        ("governance", "audit_url", "DATAFLARE_AUDIT_URL"),
        # Dagster's own io manager: no platform resource, caught by the run config check
        ("io_manager", "base_dir", None),
    ],
)
def test_in_process_override_is_refused_and_audited(
    home, instance, monkeypatch, tmp_path, resource, field, env
):
    if env is not None:
        reviewed = {
            "memory_mb": "64",
            "audit_url": f"sqlite:///{home.root / 'audit.db'}",  # where refusals are read
        }.get(field, str(home.root / "reviewed"))
        monkeypatch.setenv(env, reviewed)
    planted = 128 if field == "memory_mb" else str(tmp_path / "planted")
    run_config = {"resources": {resource: {"config": {field: planted}}}}
    result = _materialize(run_config, instance, tags={"dataflare/principal": "user:mallory"})

    assert not result.success
    path = f"resources.{resource}.config.{field}"
    assert path in _failure_text(result)
    assert "DeploymentOverrideError" in _failure_text(result)
    assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.FAILURE
    # the asset never ran
    assert not result.asset_materializations_for_node("uses_everything")
    (entry, *_) = _refusals(home)
    assert entry.actor == "user:mallory"
    assert entry.subject == f"run:{result.run_id}"
    details = json.loads(entry.details)
    assert path in details["paths"]
    assert details["where"] == "run execution"
    assert str(planted) not in entry.details


def test_caller_set_actor_that_is_not_a_principal_is_recorded_as_system(home, instance):
    run_config = {"resources": {"plugins": {"config": {"plugin_dir": "/tmp/x"}}}}
    result = _materialize(run_config, instance, tags={"dataflare/principal": "alice\nforged"})
    assert not result.success
    assert _refusals(home)[0].actor == "system"


@pytest.mark.parametrize(
    "run_config",
    [
        # nested resource: Dagster 1.13 does not expose it in the run config schema
        {"resources": {"governance": {"config": {"dataflare": {"config": {"path": "/x"}}}}}},
        {"resources": {"governance": {"config": {"dataflare": {"path": "/x"}}}}},
        # shorthand without ``config``
        {"resources": {"dataflare": {"path": "/x"}}},
    ],
)
def test_spellings_dagster_itself_refuses(home, instance, run_config):
    with pytest.raises(dg.DagsterInvalidConfigError):
        _materialize(run_config, instance)


def test_a_job_of_the_code_location_refuses_in_process(home, instance):
    from dataflare_platform.definitions import defs

    job = defs.resolve_job_def("audit_checkpoint_job")
    run_config = {"resources": {"governance": {"config": {"audit_url": "/tmp/planted"}}}}
    result = job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False)
    assert not result.success
    assert "resources.governance.config.audit_url" in _failure_text(result)
    assert [e.subject for e in _refusals(home)] == [f"run:{result.run_id}"]
    assert not Path("/tmp/planted").exists()


def test_direct_resource_use_outside_a_run_is_unchanged(home):
    """Tests and tools that build a resource directly (no run) are not refused."""
    with dg.build_init_resource_context() as context:
        resource = PluginRuntimeResource(plugin_dir=str(home.root / "p"))
        resource.setup_for_execution(context)


def test_error_names_paths_only():
    err = DeploymentOverrideError(["resources.plugins.config.plugin_dir"])
    assert "resources.plugins.config.plugin_dir" in str(err)


@pytest.mark.e2e
def test_dagster_job_execute_on_the_host_is_refused_and_audited(home, tmp_path):
    """``dagster job execute -c``: the CLI path in process on the host."""
    config = tmp_path / "override.yaml"
    planted = tmp_path / "planted_plugins"
    config.write_text(
        yaml.safe_dump({"resources": {"governance": {"config": {"audit_url": str(planted)}}}})
    )
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "job",
            "execute",
            "-m",
            "dataflare_platform.definitions",
            "-j",
            "audit_checkpoint_job",
            "-c",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, **home.environ()},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-2000:]
    assert "resources.governance.config.audit_url" in output
    (entry,) = _refusals(home)
    assert json.loads(entry.details)["paths"] == ["resources.governance.config.audit_url"]
    assert not planted.exists()
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.FAILURE


def test_an_override_also_drops_the_other_fields_and_the_value_check_names_them(
    home, instance, monkeypatch, tmp_path
):
    """Dagster 1.13 replaces a resource's whole config when a run config names one field:
    the deployment's other values (here the sandbox's memory limit from the environment)
    fall back to class defaults. The execution-time value check sees that on its own."""
    monkeypatch.setenv("DATAFLARE_PLUGIN_MEMORY_MB", "64")

    @dg.asset
    def uses_plugins(plugins: PluginRuntimeResource) -> None:
        pass

    run_config = {"resources": {"plugins": {"config": {"plugin_dir": str(tmp_path / "p")}}}}
    result = dg.materialize(
        [uses_plugins],
        resources={"plugins": PluginRuntimeResource.from_environment()},
        run_config=run_config,
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    (entry,) = _refusals(home)
    assert json.loads(entry.details)["paths"] == [
        "resources.plugins.config.memory_mb",  # from the value check alone
        "resources.plugins.config.plugin_dir",
    ]


@pytest.mark.parametrize(
    "value",
    [
        "SAME",  # the deployment's own value: still refused (a launch sets no setting)
        {"env": "SOME_OTHER_VAR"},  # indirection through another variable
    ],
)
def test_overrides_are_refused_whatever_the_value(home, instance, monkeypatch, value):
    monkeypatch.setenv("DATAFLARE_PLUGIN_DIR", str(home.root / "reviewed"))
    monkeypatch.setenv("SOME_OTHER_VAR", str(home.root / "other"))
    if value == "SAME":
        value = str(home.root / "reviewed")
    run_config = {"resources": {"plugins": {"config": {"plugin_dir": value}}}}
    result = _materialize(run_config, instance)
    assert not result.success
    assert "resources.plugins.config.plugin_dir" in _failure_text(result)
    assert _refusals(home)


def test_the_planted_plugin_folder_attack_is_refused_before_any_plugin_loads(
    home, instance, tmp_path
):
    """Issue 15's attack: a launch points the plugin folder at a directory with a planted
    module and compile cache. The code location's own masked-persons asset is refused at
    resource set-up: no plugin is loaded, nothing is written."""
    from dataflare_platform.definitions import defs

    planted = tmp_path / "planted"
    (planted / ".cache").mkdir(parents=True)
    (planted / "pii_mask.wasm").write_bytes(b"\0asm not reviewed")
    (planted / ".cache" / "planted.bin").write_bytes(b"precompiled, not reviewed")
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        run_config={"resources": {"plugins": {"config": {"plugin_dir": str(planted)}}}},
        instance=instance,
        asset_selection=[dg.AssetKey(["plugins", "masked_persons_sample"])],
        raise_on_error=False,
    )
    assert not result.success
    text = _failure_text(result)
    assert "DeploymentOverrideError" in text and "resources.plugins.config.plugin_dir" in text
    assert "PluginError" not in text  # nothing tried to load the planted module
    assert not (home.root / "plugins" / "masked_persons_sample.parquet").exists()
    assert sorted(p.name for p in planted.rglob("*")) == [".cache", "pii_mask.wasm", "planted.bin"]
    assert _refusals(home)
