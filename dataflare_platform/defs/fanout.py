"""Batch fan-out across processes: the steps of a run on Celery workers or Kubernetes Jobs.

``celery_executor`` is dagster-celery's executor with the broker taken from the
environment of the run worker when the run starts (``DATAFLARE_CELERY_BROKER_URL``: never a
value written in code or in a run config; the executor takes no config), and results
returned over the same broker (Celery's ``rpc://`` backend). The run worker
only orchestrates: every step is a Celery task that a worker process picks up, loading the
code location and opening the run's Dagster instance from the reference the task carries.
The workers are started from the same image and environment as the code server (the
code location's ``DATAFLARE_HOME`` and settings) with the app of
``dataflare_platform.instance.celery_worker``, which reads the same variable::

    celery -A dataflare_platform.instance.celery_worker worker --concurrency 1

Steps that write a DuckDB file (the daily statistics all write ``warehouse.duckdb``) still
need one writer per file: the workers serving such jobs run ``--concurrency 1`` on the
machine holding the file (docs/deploy.md, "Fan-out"); Celery's executor has no tag limits.

``k8s_executor`` is the same fan-out on Kubernetes (deployments/production/helm-values.yaml:
``K8sRunLauncher`` starts each run as a Job, and this executor each step as a Job of its
own, with the run launcher's image, secrets and resources), with the code location's
one-step-per-DuckDB-file tag limit (``defs/pools.py``) and at most 8 step pods per run.
"""

import dagster as dg
from dagster._core.definitions.executor_definition import multiple_process_executor_requirements

from dataflare_platform.defs.pools import DUCKDB_FILE_TAG
from dataflare_platform.deployment_settings import CELERY_BACKEND, celery_broker_url
from dataflare_platform.errors import ConfigError

# dagster-celery (Celery, kombu) and dagster-k8s (the Kubernetes client) cost every process
# that loads the code location about half a second to import (every run worker, every step
# process of the multiprocess executor): the executors below import them only when a run
# of their job starts. Their config is fixed here, so a launch cannot change it.
K8S_EXECUTOR_CONFIG = {
    "max_concurrent": 8,
    "tag_concurrency_limits": [
        {"key": DUCKDB_FILE_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ],
}


@dg.executor(
    name="celery_broker_from_environment",
    config_schema={},
    requirements=multiple_process_executor_requirements(),
)
def celery_executor(init_context: dg.InitExecutorContext):
    """dagster-celery's executor (retries on, as its default) on the broker named by
    ``DATAFLARE_CELERY_BROKER_URL``, results over the same broker."""
    from dagster._core.execution.retries import RetryMode
    from dagster_celery.executor import CeleryExecutor

    return CeleryExecutor(
        retries=RetryMode.ENABLED, broker=celery_broker_url(), backend=CELERY_BACKEND
    )


@dg.executor(
    name="k8s_step_jobs_one_writer_per_duckdb_file",
    config_schema={},
    requirements=multiple_process_executor_requirements(),
)
def k8s_executor(init_context: dg.InitExecutorContext):
    """dagster-k8s's ``k8s_job_executor`` with ``K8S_EXECUTOR_CONFIG``: a Kubernetes Job per
    step, at most 8 at a time, one step per DuckDB file at a time."""
    from dagster._config import process_config
    from dagster_k8s import k8s_job_executor

    config = process_config(k8s_job_executor.config_schema.config_type, K8S_EXECUTOR_CONFIG)
    if not config.success:
        raise ConfigError(
            "k8s executor settings", [(str(e.stack), e.message) for e in config.errors or []]
        )
    return k8s_job_executor.executor_creation_fn(
        dg.InitExecutorContext(
            job=init_context.job,
            executor_def=k8s_job_executor,
            executor_config=config.value,
            instance=init_context.instance,
        )
    )
