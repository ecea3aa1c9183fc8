"""Batch fan-out across processes: the steps of a run on Celery workers or Kubernetes Jobs.

``celery_executor`` is dagster-celery's executor with the broker taken from the
environment the run starts in (``DATAFLARE_CELERY_BROKER_URL``, an ``env:`` source that
Dagster resolves when the run starts: never a value written in code or in a run config),
and results returned over the same broker (Celery's ``rpc://`` backend). The run worker
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

from dagster_celery import celery_executor as _dagster_celery_executor
from dagster_k8s import k8s_job_executor

from dataflare_platform.defs.pools import DUCKDB_FILE_TAG
from dataflare_platform.deployment_settings import CELERY_BROKER_ENV

celery_executor = _dagster_celery_executor.configured(
    {"broker": {"env": CELERY_BROKER_ENV}, "backend": "rpc://"},
    name="celery_broker_from_environment",
)
"""dagster-celery's executor on the broker named by ``DATAFLARE_CELERY_BROKER_URL``."""

k8s_executor = k8s_job_executor.configured(
    {
        "max_concurrent": 8,
        "tag_concurrency_limits": [
            {"key": DUCKDB_FILE_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        ],
    },
    name="k8s_step_jobs_one_writer_per_duckdb_file",
)
"""dagster-k8s's executor: a Kubernetes Job per step, one step per DuckDB file at a time."""
