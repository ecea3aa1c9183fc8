"""The production deployment files (deployments/production, docs/deploy.md) hold what
they promise: a PostgreSQL instance Dagster accepts, credentials only from the
environment, every process of the topology in the compose file on loopback ports, the
K8s launcher in the Helm values, and the Dagster library pinned to the family. The
running topology is the e2e test's (e2e/test_prod_topology.py)."""

import re
import tomllib

import yaml

from dataflare_platform.home import PRODUCTION_INSTANCE_MARKER, ProjectHome
from dataflare_platform_tests.conftest import REPO_ROOT

PRODUCTION = REPO_ROOT / "deployments" / "production"
PG_ENV = {
    "DAGSTER_PG_USERNAME": "u",
    "DAGSTER_PG_PASSWORD": "p",
    "DAGSTER_PG_HOST": "127.0.0.1",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_DB": "d",
}


def test_instance_config_is_valid_and_on_postgres(tmp_path, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    for key, value in PG_ENV.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "dagster.yaml").write_text((PRODUCTION / "dagster.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    postgres = config["storage"]["postgres"]["postgres_db"]
    assert postgres["scheme"] == "postgresql+psycopg2"
    # Every connection setting is read from the environment, none written inline.
    for key in ("username", "password", "hostname", "db_name", "port"):
        assert set(postgres[key]) == {"env"}, key
    coordinator = config["run_coordinator"]["config"]
    assert coordinator["tag_concurrency_limits"] and coordinator["max_concurrent_runs"] > 0
    assert config["run_monitoring"]["enabled"] and config["run_retries"]["enabled"]
    # Run monitoring fails a run whose worker died with its code server only if the
    # launcher checks worker health (Dagster's DefaultRunLauncher does not).
    assert config["run_monitoring"]["max_resume_run_attempts"] == 0
    assert config["run_launcher"] == {
        "module": "dataflare_platform.instance.run_launcher",
        "class": "MonitoredRunLauncher",
    }
    assert config["concurrency"]["pools"]["default_limit"] == 1


def test_instance_builds_the_monitored_launcher(tmp_path, monkeypatch):
    """The launcher entry rehydrates as Dagster's instance does it (ConfigurableClassData)."""
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.launcher import RunLauncher
    from dagster._serdes import ConfigurableClassData

    from dataflare_platform.instance.run_launcher import MonitoredRunLauncher

    for key, value in PG_ENV.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "dagster.yaml").write_text((PRODUCTION / "dagster.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    entry = config["run_launcher"]
    data = ConfigurableClassData(
        entry["module"], entry["class"], yaml.dump(entry.get("config", {}))
    )
    launcher = data.rehydrate(as_type=RunLauncher)
    assert isinstance(launcher, MonitoredRunLauncher)
    assert launcher.supports_check_run_worker_health


def test_workspace_reaches_a_grpc_code_server(monkeypatch):
    from dagster._core.workspace.config_schema import ensure_workspace_config

    monkeypatch.setenv("DAGSTER_CODE_SERVER_HOST", "127.0.0.1")
    monkeypatch.setenv("DAGSTER_CODE_SERVER_PORT", "4266")
    workspace = yaml.safe_load((PRODUCTION / "workspace.yaml").read_text())
    ensure_workspace_config(workspace, str(PRODUCTION))
    (entry,) = workspace["load_from"]
    assert set(entry) == {"grpc_server"}


def test_home_keeps_a_production_instance_config(tmp_path):
    home = ProjectHome.resolve(tmp_path / "home").ensure()
    instance_yaml = home.dagster_home / "dagster.yaml"
    production = (PRODUCTION / "dagster.yaml").read_text()
    assert production.startswith(PRODUCTION_INSTANCE_MARKER)
    instance_yaml.write_text(production)
    home.ensure()
    assert instance_yaml.read_text() == production
    instance_yaml.write_text("storage: {}\n")  # anything else is restored to the local one
    home.ensure()
    assert instance_yaml.read_text() != "storage: {}\n"


def test_compose_runs_every_process_on_loopback_without_inline_secrets():
    text = (PRODUCTION / "docker-compose.yaml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    assert {
        "postgres",
        "code-server",
        "front",
        "readonly-webserver",
        "daemon",
        "metrics-exporter",
    } <= set(services)
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert "--read-only" in services["readonly-webserver"]["command"]
    assert "--no-daemon" in services["front"]["command"]
    # The only password is a required variable, never a literal.
    for match in re.finditer(r"PASSWORD:\s*(\S+)", text):
        assert match.group(1).startswith("${DAGSTER_PG_PASSWORD:?"), match.group(0)


def test_helm_values_use_the_k8s_launcher_and_the_authorizing_coordinator():
    values = yaml.safe_load((PRODUCTION / "helm-values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    custom = values["dagsterDaemon"]["runCoordinator"]["config"]["customRunCoordinator"]
    assert custom["class"] == "AuthorizingRunCoordinator"
    assert "postgresqlPassword" not in values["postgresql"]
    assert values["global"]["postgresqlSecretName"]
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "dataflare_platform.definitions"]


def test_dagster_libraries_pinned_to_the_family():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(
        re.fullmatch(r"([a-z0-9-]+)==(\S+)", dep).groups()
        for dep in project["dependencies"]
        if dep.startswith("dagster")
    )
    core = pins["dagster"]
    _major, minor, patch = core.split(".")
    library = f"0.{int(minor) + 16}.{patch}"  # 1.13.27 -> 0.29.27
    assert pins["dagster-postgres"] == library
    assert all(v in (core, library) for v in pins.values()), pins
