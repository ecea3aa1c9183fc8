"""A small code location for the production-topology e2e tests: ``keyed_sensor`` asks for
one run per key of a fixed set on every tick (run keys make the repeats no-ops), and
``hello_job`` is launched by the client."""

import dagster as dg

RUN_KEYS = ("a", "b", "c")


@dg.op
def hello() -> int:
    return 1


@dg.job
def hello_job():
    hello()


@dg.job
def keyed_job():
    hello()


@dg.sensor(job=keyed_job, minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING)
def keyed_sensor():
    for key in RUN_KEYS:
        yield dg.RunRequest(run_key=key)


defs = dg.Definitions(jobs=[hello_job, keyed_job], sensors=[keyed_sensor])
