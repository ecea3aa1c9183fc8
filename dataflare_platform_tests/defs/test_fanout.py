"""The fan-out executors' settings (defs/fanout.py), without a broker or a cluster: the
broker comes from the environment only, a missing one stops the run naming the variable,
and a launch cannot point a run at another broker. The runs themselves are
e2e/test_celery_fanout.py's (real RabbitMQ and worker) and test_k8s_deployment.py's."""

import dagster as dg
import pytest

from dataflare_platform.definitions import defs
from dataflare_platform.deployment_settings import (
    CELERY_BROKER_ENV,
    celery_broker_url,
    forbidden_overrides,
)
from dataflare_platform.errors import ConfigError

CELERY_JOB = "nexmark_daily_stats_celery_job"
K8S_JOB = "nexmark_daily_stats_k8s_job"


def test_the_broker_url_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(CELERY_BROKER_ENV, " amqp://u:secret@broker.internal:5672/prod ")
    assert celery_broker_url() == "amqp://u:secret@broker.internal:5672/prod"
    for missing in ("", "  "):
        monkeypatch.setenv(CELERY_BROKER_ENV, missing)
        with pytest.raises(ConfigError, match=CELERY_BROKER_ENV):
            celery_broker_url()
    monkeypatch.delenv(CELERY_BROKER_ENV)
    with pytest.raises(ConfigError) as refused:
        celery_broker_url()
    assert refused.value.fields == [CELERY_BROKER_ENV]


def _recon(job_name: str):
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    from dataflare_platform_tests.conftest import REPO_ROOT

    return ReconstructableRepository.for_module(
        "dataflare_platform.definitions", "defs", str(REPO_ROOT)
    ).get_reconstructable_job(job_name)


def test_the_celery_executor_is_created_on_the_environments_broker(monkeypatch):
    from dagster_celery.executor import CeleryExecutor

    url = "amqp://u:secret@broker.internal:5672/prod"
    monkeypatch.setenv(CELERY_BROKER_ENV, url)
    job = defs.resolve_job_def(CELERY_JOB)
    with dg.instance_for_test() as instance:
        executor = job.executor_def.executor_creation_fn(
            dg.InitExecutorContext(
                job=_recon(CELERY_JOB),
                executor_def=job.executor_def,
                executor_config={},
                instance=instance,
            )
        )
    # Built, not connected: Celery connects when the first task is sent.
    assert isinstance(executor, CeleryExecutor)
    assert executor.broker == url
    assert executor.backend == "rpc://"


@pytest.mark.parametrize("job_name", [CELERY_JOB, K8S_JOB])
def test_a_launch_cannot_configure_the_fan_out_executors(job_name, home):
    job = defs.resolve_job_def(job_name)
    evil = {"execution": {"config": {"broker": "amqp://attacker.example/"}}}
    # The executors take no config: Dagster's own schema refuses any ...
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(job, evil)
    # ... and the daily statistics' usual partition launch is accepted as it is.
    assert dg.validate_run_config(job, {}) is not None
    assert forbidden_overrides(evil) == []  # the guard leaves executor settings to Dagster


def test_a_run_without_the_broker_setting_stops_before_any_step_naming_it(home, monkeypatch):
    monkeypatch.delenv(CELERY_BROKER_ENV, raising=False)
    recon = _recon(CELERY_JOB)
    with dg.DagsterInstance.get() as instance:
        # The executor is made when the run starts: the run stops there, before any step.
        with pytest.raises(ConfigError, match=CELERY_BROKER_ENV):
            dg.execute_job(recon, instance=instance, tags={"dagster/partition": "2026-01-01"})
        (run,) = instance.get_runs()
        events = instance.all_logs(run.run_id)
        assert not [e for e in events if e.dagster_event and e.dagster_event.is_step_start]
