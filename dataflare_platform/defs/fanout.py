"""Batch fan-out across processes: the steps of a run on Celery workers.

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
machine holding the file (docs/deploy.md, "Fan-out"). On Kubernetes the same jobs use
``dagster_k8s.k8s_job_executor`` instead (a pod per step); the instance and the chart
values are in ``deployments/production``.
"""

from dagster_celery import celery_executor as _dagster_celery_executor

from dataflare_platform.deployment_settings import CELERY_BROKER_ENV

celery_executor = _dagster_celery_executor.configured(
    {"broker": {"env": CELERY_BROKER_ENV}, "backend": "rpc://"},
    name="celery_broker_from_environment",
)
"""dagster-celery's executor on the broker named by ``DATAFLARE_CELERY_BROKER_URL``."""
