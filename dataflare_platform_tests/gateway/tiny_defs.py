"""A tiny code location for the front's in-process tests: one job and one sensor."""

import dagster as dg


@dg.op
def noop() -> None:
    pass


@dg.job
def tiny_job() -> None:
    noop()


@dg.sensor(job=tiny_job)
def tiny_sensor():
    return dg.SkipReason("test sensor")


defs = dg.Definitions(jobs=[tiny_job], sensors=[tiny_sensor])
