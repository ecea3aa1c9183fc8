"""The Celery app of the platform's fan-out workers (``defs/fanout.py``).

Start a worker from the code server's image and environment (``DATAFLARE_HOME`` and the
other deployment settings, which the steps' resources read) with::

    DATAFLARE_CELERY_BROKER_URL=amqp://USER:PASSWORD@HOST:5672/VHOST \\
        celery -A dataflare_platform.instance.celery_worker worker --concurrency 1

It is dagster-celery's own app (the task that executes one step of a run, on the queue
``dagster``), built with the broker from ``DATAFLARE_CELERY_BROKER_URL``: the same variable
the executor reads, so the runs and the workers meet on one broker without the URL (and
its password) written anywhere. dagster-celery's ``dagster-celery worker start`` would
instead write the resolved URL into a module under ``DAGSTER_HOME``. Read when the worker
imports this module, the one place that variable is read outside a run.
"""

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from dataflare_platform.deployment_settings import CELERY_BACKEND, celery_broker_url


def build_app():
    """dagster-celery's app with its step task, on the environment's broker."""
    app = make_app(
        CeleryExecutor.for_cli(broker=celery_broker_url(), backend=CELERY_BACKEND).app_args()
    )
    create_task(app)
    return app


app = build_app()
