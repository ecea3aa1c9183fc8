"""The Kubernetes side of the production deployment, checked without a cluster.

There is no Kubernetes and no ``helm`` on the build machine, so nothing here runs a pod.
What is checked, and how:

- ``deployments/production/helm-values.yaml`` against the shape the official chart's
  ``values.schema.json`` gives the keys it sets (``HelmValues`` below: the chart's field
  names and enums, every model ``extra="forbid"`` so a misspelt or unknown key fails; the
  chart's own defaults fill what the file leaves out, so only types and names are checked,
  not the chart's required lists). Read from dagster-io/dagster ``helm/dagster/
  values.schema.json`` (the 1.x chart, ``dagsterWebserver`` era); the schema file itself is
  not vendored.
- The run launcher settings rendered the way the chart's instance ConfigMap renders them
  (``helm/dagster/templates/helpers/instance/_run-launcher.tpl``: camelCase values to the
  launcher's snake_case config, plus the chart's own service account, instance ConfigMap,
  PostgreSQL secret and ``DAGSTER_HOME``) must satisfy ``K8sRunLauncher``'s own config
  schema (dagster-k8s 0.29.27).
- ``K8sRunLauncher`` built from those settings launches a run of the platform's
  ``nexmark_daily_stats_k8s_job`` against a mocked Kubernetes batch API, the way
  dagster-k8s's own launcher tests do: the Job manifest it would create (image, pull policy,
  env from the secrets, the PostgreSQL password from its secret, labels, resources, job
  spec, the run worker's command) is what the values say. The mock stands for the cluster.
- The batch jobs of that deployment use ``k8s_job_executor`` (a Job per step) with the
  one-writer-per-DuckDB-file limit, and a step handed to that executor (in an instance
  whose launcher is the chart's ``K8sRunLauncher``, ``kubernetes.client.BatchV1Api``
  mocked) becomes a Job with the run's image and the launcher's secrets, resources and
  Job spec, running that one step.
"""

from typing import Literal
from unittest import mock

import pytest
import yaml
from dagster._config import process_config
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.launcher import LaunchRunContext
from dagster._core.storage.tags import DOCKER_IMAGE_TAG
from dagster._core.test_utils import create_run_for_test, instance_for_test
from dagster_k8s import K8sRunLauncher
from dagster_k8s.job import DAGSTER_PG_PASSWORD_ENV_VAR
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from dataflare_platform.defs.pools import DUCKDB_FILE_TAG
from dataflare_platform_tests.conftest import REPO_ROOT

VALUES_FILE = REPO_ROOT / "deployments" / "production" / "helm-values.yaml"
K8S_JOB = "nexmark_daily_stats_k8s_job"
# What the chart fills in itself (its values.yaml defaults and templates) for a release
# named "dagster" in the namespace "dataflare".
CHART_DAGSTER_HOME = "/opt/dagster/dagster_home"
RELEASE_NAMESPACE = "dataflare"
SERVICE_ACCOUNT = "dagster"
INSTANCE_CONFIG_MAP = "dagster-instance"

PullPolicy = Literal["Always", "IfNotPresent", "Never"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class Image(_Strict):
    repository: str
    tag: str | int | None = None
    pull_policy: PullPolicy


class SecretEnvSource(_Strict):
    name: str
    optional: bool | None = None


class Service(_Strict):
    type: str
    port: int
    annotations: dict[str, str] | None = None


class Resources(_Strict):
    requests: dict[str, str] | None = None
    limits: dict[str, str] | None = None


class Global(_Strict):
    postgresql_secret_name: str | None = None
    dagster_home: str | None = None
    service_account_name: str | None = None
    celery_config_secret_name: str | None = None


class Telemetry(_Strict):
    enabled: bool


class PostgreSQLService(_Strict):
    port: int


class PostgreSQL(_Strict):
    enabled: bool
    postgresql_host: str
    postgresql_username: str
    postgresql_database: str
    postgresql_params: dict[str, str] | None = None
    postgresql_scheme: str | None = None
    service: PostgreSQLService
    # postgresqlPassword exists in the chart; the file must never set it (a Secret holds it).


class IncludeConfigInLaunchedRuns(_Strict):
    enabled: bool


class UserDeployment(_Strict):
    name: str
    image: Image
    dagster_api_grpc_args: list[str] | None = None
    code_server_args: list[str] | None = None
    port: int
    include_config_in_launched_runs: IncludeConfigInLaunchedRuns | None = None
    env_secrets: list[SecretEnvSource] | None = None
    resources: Resources | None = None


class UserDeployments(_Strict):
    enabled: bool
    enable_subchart: bool
    deployments: list[UserDeployment]


class Webserver(_Strict):
    replica_count: int
    enable_read_only: bool
    image: Image
    service: Service


class RunK8sConfig(_Strict):
    container_config: dict | None = None
    pod_spec_config: dict | None = None
    pod_template_spec_metadata: dict | None = None
    job_spec_config: dict | None = None
    job_metadata: dict | None = None


class K8sRunLauncherConfig(_Strict):
    image: Image | None = None
    image_pull_policy: PullPolicy
    job_namespace: str | None = None
    load_incluster_config: bool | None = None
    env_secrets: list[SecretEnvSource] | None = None
    labels: dict[str, str] | None = None
    fail_pod_on_run_failure: bool | None = None
    resources: Resources | None = None
    run_k8s_config: RunK8sConfig | None = Field(default=None, alias="runK8sConfig")


class RunLauncherConfig(_Strict):
    k8s_run_launcher: K8sRunLauncherConfig = Field(alias="k8sRunLauncher")


class RunLauncher(_Strict):
    type: Literal["CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"]
    config: RunLauncherConfig


class ConfigurableClass(_Strict):
    module: str
    class_: str = Field(alias="class")
    config: dict


class RunCoordinatorConfig(_Strict):
    custom_run_coordinator: ConfigurableClass


class RunCoordinator(_Strict):
    enabled: bool
    type: Literal["QueuedRunCoordinator", "CustomRunCoordinator"]
    config: RunCoordinatorConfig


class Daemon(_Strict):
    enabled: bool
    image: Image
    run_coordinator: RunCoordinator
    run_monitoring: dict
    run_retries: dict


class HelmValues(_Strict):
    global_: Global = Field(alias="global")
    telemetry: Telemetry
    generate_postgresql_password_secret: bool
    postgresql: PostgreSQL
    dagster_user_deployments: UserDeployments = Field(alias="dagster-user-deployments")
    dagster_webserver: Webserver
    run_launcher: RunLauncher
    dagster_daemon: Daemon


def _values() -> dict:
    return yaml.safe_load(VALUES_FILE.read_text())


def _launcher_config(values: dict) -> dict:
    """``run_launcher.config`` as the chart's instance ConfigMap renders it for the
    K8sRunLauncher (``_run-launcher.tpl``), for a release in ``RELEASE_NAMESPACE``."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    config: dict = {
        "load_incluster_config": launcher.get("loadInclusterConfig", True),
        "job_namespace": launcher.get("jobNamespace") or RELEASE_NAMESPACE,
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": SERVICE_ACCOUNT,
        "dagster_home": values["global"].get("dagsterHome", CHART_DAGSTER_HOME),
        "instance_config_map": INSTANCE_CONFIG_MAP,
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    if "image" in launcher:
        image = launcher["image"]
        config["job_image"] = f"{image['repository']}:{image['tag']}"
    if launcher.get("envSecrets"):
        config["env_secrets"] = [s["name"] for s in launcher["envSecrets"] if "name" in s]
    for key, field in (
        ("labels", "labels"),
        ("resources", "resources"),
        ("failPodOnRunFailure", "fail_pod_on_run_failure"),
    ):
        if launcher.get(key):
            config[field] = launcher[key]
    run_k8s = launcher.get("runK8sConfig") or {}
    rendered = {
        snake: run_k8s[camel]
        for camel, snake in (
            ("containerConfig", "container_config"),
            ("podSpecConfig", "pod_spec_config"),
            ("podTemplateSpecMetadata", "pod_template_spec_metadata"),
            ("jobSpecConfig", "job_spec_config"),
            ("jobMetadata", "job_metadata"),
        )
        if run_k8s.get(camel)
    }
    if rendered:
        config["run_k8s_config"] = rendered
    return config


def test_helm_values_have_the_charts_shape():
    values = HelmValues.model_validate(_values())
    assert values.run_launcher.type == "K8sRunLauncher"
    launcher = values.run_launcher.config.k8s_run_launcher
    assert [s.name for s in launcher.env_secrets or []] == ["dataflare-runtime-secrets"]
    # Secrets by reference only: no password key anywhere in the file.
    assert "postgresqlPassword" not in _values()["postgresql"]
    (deployment,) = values.dagster_user_deployments.deployments
    assert deployment.include_config_in_launched_runs
    assert deployment.include_config_in_launched_runs.enabled


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("runLauncher", "config", "k8sRunLauncher", "imagePulPolicy"), "Always"),
        (("runLauncher", "config", "k8sRunLauncher", "imagePullPolicy"), "Sometimes"),
        (("runLauncher", "type"), "K8sLauncher"),
        (("dagsterWebserver", "replicaCount"), "two"),
    ],
)
def test_the_shape_check_refuses_a_wrong_key_or_value(path, bad):
    values = _values()
    node = values
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    with pytest.raises(ValueError, match=path[-1]):
        HelmValues.model_validate(values)


def test_rendered_launcher_config_satisfies_k8s_run_launcher():
    config = _launcher_config(_values())
    result = process_config(K8sRunLauncher.config_type(), config)
    assert result.success, [error.message for error in result.errors or []]
    processed = result.value
    assert processed["env_secrets"] == ["dataflare-runtime-secrets"]
    assert processed["run_k8s_config"]["job_spec_config"]["backoffLimit"] == 0


@pytest.fixture
def kubeconfig_file(tmp_path):
    """A kubeconfig for a cluster that does not exist: the client is configured from it,
    and the mocked batch API is all that is ever called."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "not-a-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return str(path)


def test_launcher_creates_the_run_job_the_values_describe(kubeconfig_file):
    values = _values()
    config = _launcher_config(values)
    # Outside a cluster: the kubeconfig above instead of the pod's service account.
    config.update(load_incluster_config=False, kubeconfig_file=kubeconfig_file)
    batch_api = mock.MagicMock()
    launcher = K8sRunLauncher(
        **config, k8s_client_batch_api=batch_api, k8s_client_core_api=mock.MagicMock()
    )
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    # The code server of the user deployment reports its image (DAGSTER_CURRENT_IMAGE) in
    # the origin of every run it launches: that is the image of the run's Job.
    origin = (
        ReconstructableRepository.for_module(
            "dataflare_platform.definitions", "defs", str(REPO_ROOT), container_image=image
        )
        .get_reconstructable_job(K8S_JOB)
        .get_python_origin()
    )
    with instance_for_test() as instance:
        run = create_run_for_test(instance, job_name=K8S_JOB, job_code_origin=origin)
        launcher.register_instance(instance)
        launcher.launch_run(LaunchRunContext(run, workspace=None))
        assert instance.get_run_by_id(run.run_id).tags[DOCKER_IMAGE_TAG] == image

    (call,) = [c for c in batch_api.method_calls if c[0] == "create_namespaced_job"]
    _name, _args, kwargs = call
    assert kwargs["namespace"] == RELEASE_NAMESPACE
    job = kwargs["body"]
    assert job.metadata.labels["dagster/job"] == K8S_JOB
    assert job.metadata.labels["dagster/run-id"] == run.run_id
    assert job.spec.backoff_limit == 0
    assert job.spec.ttl_seconds_after_finished == 86400
    pod = job.spec.template.spec
    assert pod.service_account_name == SERVICE_ACCOUNT
    assert job.spec.template.metadata.labels["dagster/job"] == K8S_JOB
    (container,) = pod.containers
    assert container.image == image
    assert container.image_pull_policy == "IfNotPresent"
    # The run worker executes this run of this job against the chart's instance.
    assert container.args[:3] == ["dagster", "api", "execute_run"]
    assert run.run_id in container.args[3]
    # Secrets reach the pod by reference only: the runtime secrets as env_from, the
    # PostgreSQL password from its Secret's key.
    assert [source.secret_ref.name for source in container.env_from if source.secret_ref] == [
        "dataflare-runtime-secrets"
    ]
    env = {var.name: var for var in container.env}
    password = env[DAGSTER_PG_PASSWORD_ENV_VAR].value_from.secret_key_ref
    assert (password.name, password.key) == ("dataflare-postgresql", "postgresql-password")
    assert env[DAGSTER_PG_PASSWORD_ENV_VAR].value is None
    assert env["DAGSTER_HOME"].value == CHART_DAGSTER_HOME
    assert env["DAGSTER_RUN_JOB_NAME"].value == K8S_JOB
    resources = container.resources.to_dict()
    assert resources["requests"] == {"cpu": "500m", "memory": "1Gi"}
    assert resources["limits"] == {"memory": "4Gi"}


def test_the_batch_jobs_of_that_deployment_fan_out_with_k8s_job_executor():
    from dagster_k8s import k8s_job_executor

    from dataflare_platform.definitions import defs
    from dataflare_platform.defs.fanout import K8S_EXECUTOR_CONFIG

    job = defs.resolve_job_def(K8S_JOB)
    assert job.executor_def.name == "k8s_step_jobs_one_writer_per_duckdb_file"
    # dagster-k8s's executor with a config its own schema accepts, with the DuckDB limit.
    checked = process_config(k8s_job_executor.config_schema.config_type, K8S_EXECUTOR_CONFIG)
    assert checked.success, checked.errors
    assert checked.value["max_concurrent"] == 8
    (limit,) = checked.value["tag_concurrency_limits"]
    assert (limit["key"], limit["limit"]) == (DUCKDB_FILE_TAG, 1)
    # Every step of the job opens the warehouse and carries the tag the limit keys on.
    assert len(job.graph.node_dict) == 3
    for node in job.graph.node_dict.values():
        assert node.definition.tags.get(DUCKDB_FILE_TAG), node.name


def test_k8s_executor_creates_a_job_per_step_with_the_launcher_settings(kubeconfig_file, home):
    """A step of ``nexmark_daily_stats_k8s_job`` handed to the executor's step handler in an
    instance whose run launcher is the chart's ``K8sRunLauncher`` (built from its rendered
    config by Dagster's instance loader), with ``kubernetes.client.BatchV1Api`` mocked (as
    dagster-k8s's executor tests do): the step's Job carries the run's image, the runtime
    secrets, the resources and Job spec of the launcher, and runs only that step. (``home``
    sets DATAFLARE_HOME, which the job's resources read when its plan is built.)"""
    from dagster._core.execution.api import create_execution_plan
    from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
    from dagster._core.execution.context_creation_job import create_context_free_log_manager
    from dagster._core.execution.retries import RetryMode
    from dagster._core.executor.init import InitExecutorContext
    from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
    from dagster._grpc.types import ExecuteStepArgs
    from dagster_k8s.executor import K8sStepHandler

    values = _values()
    config = _launcher_config(values)
    config.update(load_incluster_config=False, kubeconfig_file=kubeconfig_file)
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    recon = ReconstructableRepository.for_module(
        "dataflare_platform.definitions", "defs", str(REPO_ROOT), container_image=image
    ).get_reconstructable_job(K8S_JOB)
    job_def = recon.get_definition()

    overrides = {
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}
    }
    with (
        instance_for_test(overrides=overrides) as instance,
        mock.patch("kubernetes.client.BatchV1Api") as batch_api_class,
        mock.patch("kubernetes.client.CoreV1Api"),
    ):
        assert isinstance(instance.run_launcher, K8sRunLauncher)
        executor = job_def.executor_def.executor_creation_fn(
            InitExecutorContext(
                job=recon,
                executor_def=job_def.executor_def,
                executor_config={},  # the platform's executor takes none: its config is fixed
                instance=instance,
            )
        )
        # The platform's executor hands over to dagster-k8s's own (step handler and all).
        assert isinstance(executor._step_handler, K8sStepHandler)
        assert executor._max_concurrent == 8
        run = create_run_for_test(
            instance,
            job_name=K8S_JOB,
            job_code_origin=recon.get_python_origin(),
            tags={"dagster/partition": "2026-01-01"},
        )
        plan = create_execution_plan(recon, tags=run.tags)
        step_key = "nexmark__daily_seller_stats"
        plan_context = PlanOrchestrationContext(
            plan_data=PlanData(
                job=recon,
                dagster_run=run,
                instance=instance,
                execution_plan=plan,
                raise_on_error=True,
                retry_mode=RetryMode.DISABLED,
            ),
            log_manager=create_context_free_log_manager(instance, run),
            executor=executor,
            output_capture=None,
        )
        context = StepHandlerContext(
            instance=instance,
            plan_context=plan_context,
            steps=[plan.get_step_by_key(step_key)],
            execute_step_args=ExecuteStepArgs(recon.get_python_origin(), run.run_id, [step_key]),
            dagster_run=run,
        )
        list(executor._step_handler.launch_step(context))

    create = batch_api_class.return_value.create_namespaced_job
    create.assert_called_once()
    assert create.call_args.kwargs["namespace"] == RELEASE_NAMESPACE
    job = create.call_args.kwargs["body"]
    labels = job.spec.template.metadata.labels
    assert labels["dagster/job"] == K8S_JOB
    assert labels["dagster/run-id"] == run.run_id
    assert labels["dagster/op"] == step_key
    assert job.spec.backoff_limit == 0
    assert job.spec.ttl_seconds_after_finished == 86400
    (container,) = job.spec.template.spec.containers
    assert container.image == image  # the run's image: the user deployment's
    assert container.args[:3] == ["dagster", "api", "execute_step"]
    assert [s.secret_ref.name for s in container.env_from if s.secret_ref] == [
        "dataflare-runtime-secrets"
    ]
    env = {var.name: var for var in container.env}
    assert env[DAGSTER_PG_PASSWORD_ENV_VAR].value_from.secret_key_ref.name == (
        "dataflare-postgresql"
    )
    resources = container.resources.to_dict()
    assert resources["requests"] == {"cpu": "500m", "memory": "1Gi"}
    assert resources["limits"] == {"memory": "4Gi"}
