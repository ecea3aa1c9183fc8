"""A small code location for the production-topology e2e tests: ``keyed_sensor`` asks for
one run per key of a fixed set on every tick (run keys make the repeats no-ops),
``hello_job`` is launched by the client, and ``long_job`` runs until its release file
exists (the run-monitoring tests kill its worker meanwhile)."""

import time
from pathlib import Path

import dagster as dg

RELEASE_CEILING_S = 600.0

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


RELEASE_TAG = "e2e/release_file"


@dg.op
def wait_for_release(context: dg.OpExecutionContext) -> str:
    """Poll for the run's release file (tag :data:`RELEASE_TAG`; a tag, not op config, as
    launches may not set op config, and a retry inherits its parent's tags)."""
    path = Path(context.run.tags[RELEASE_TAG])
    deadline = time.monotonic() + RELEASE_CEILING_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise dg.Failure(f"{path} did not appear within {RELEASE_CEILING_S}s")
        time.sleep(0.2)
    return path.read_text()


@dg.job
def long_job():
    wait_for_release()


def release_tags(path: Path) -> dict[str, str]:
    return {RELEASE_TAG: str(path)}


@dg.sensor(job=keyed_job, minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING)
def keyed_sensor():
    for key in RUN_KEYS:
        yield dg.RunRequest(run_key=key)


defs = dg.Definitions(jobs=[hello_job, keyed_job, long_job], sensors=[keyed_sensor])
