from pathlib import Path

import dagster as dg
import pytest
import yaml

from dataflare_platform.errors import ConfigError
from dataflare_platform.home import DEFAULT_HOME_DIRNAME, LOCAL_DAGSTER_YAML, ProjectHome
from dataflare_platform_tests.conftest import REPO_ROOT


def test_default_home_is_dot_dataflare_in_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("DATAFLARE_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert ProjectHome.resolve().root == tmp_path / DEFAULT_HOME_DIRNAME


def test_env_var_overrides_default_and_argument_overrides_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAFLARE_HOME", str(tmp_path / "from-env"))
    assert ProjectHome.resolve().root == tmp_path / "from-env"
    assert ProjectHome.resolve(tmp_path / "explicit").root == tmp_path / "explicit"


def test_ensure_lays_out_home_idempotently(tmp_path):
    home = ProjectHome.resolve(tmp_path / "h").ensure().ensure()
    assert (home.dagster_home / "dagster.yaml").read_text() == LOCAL_DAGSTER_YAML
    assert home.events_dir.is_dir()
    assert home.environ()["DAGSTER_HOME"] == str(home.dagster_home)
    assert home.warehouse_path.parent == home.root


def test_local_dagster_yaml_is_sqlite_without_telemetry():
    shipped = (REPO_ROOT / "deployments" / "local" / "dagster.yaml").read_text()
    assert shipped == LOCAL_DAGSTER_YAML
    config = yaml.safe_load(shipped)
    assert "sqlite" in config["storage"]
    assert config["telemetry"]["enabled"] is False


def test_local_instance_monitors_runs_and_retries_only_opted_in_jobs(home):
    """Dagster reads the shipped settings as meant: monitoring on (resume off, the default
    launcher cannot resume), run retries on with no retries unless a job's tag asks."""
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert not instance.run_launcher.supports_resume_run
        assert instance.run_monitoring_poll_interval_seconds == 30
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 0


@pytest.mark.parametrize("make_bad", ["file", "below_file"])
def test_unwritable_home_is_refused_naming_the_field(tmp_path: Path, make_bad: str):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    target = blocker if make_bad == "file" else blocker / "sub" / "home"
    with pytest.raises(ConfigError) as err:
        ProjectHome.resolve(target)
    assert err.value.fields == ["home"]
    assert "not a directory" in str(err.value)


def test_one_code_location_name_everywhere(tmp_path):
    """workspace.yaml, dg, `make ui` and the home's own workspace file agree on the
    module and the location name the demo's runs are recorded under."""
    import tomllib

    from dataflare_platform.home import DEFINITIONS_MODULE, LOCATION_NAME, WORKSPACE_YAML

    assert (REPO_ROOT / "workspace.yaml").read_text() == WORKSPACE_YAML
    workspace = yaml.safe_load(WORKSPACE_YAML)["load_from"][0]["python_module"]
    assert workspace == {"module_name": DEFINITIONS_MODULE, "location_name": LOCATION_NAME}
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]
    assert pyproject["dg"]["project"]["code_location_name"] == LOCATION_NAME
    assert pyproject["dg"]["project"]["code_location_target_module"] == DEFINITIONS_MODULE
    assert pyproject["dagster"]["code_location_name"] == LOCATION_NAME
    assert "dataflare ui --workspace workspace.yaml" in (REPO_ROOT / "Makefile").read_text()
    home = ProjectHome.resolve(tmp_path / "home").ensure()
    assert home.write_workspace().read_text() == WORKSPACE_YAML
