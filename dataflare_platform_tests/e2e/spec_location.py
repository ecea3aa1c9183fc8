"""A code location for the end-to-end tests of one stream pipeline that cannot be a
shipped one (it reads the test's own Kafka cluster or topic): the platform's shared
resources and the definitions (asset, jobs, sensors, ``<pipeline>_workers``,
``<pipeline>_autoscaler``) of the pipeline in the spec file ``DFTEST_PIPELINE_SPEC``
names.

It also registers the step ``costly`` (microseconds per event), which only tests use:
it holds a process-wide lock while it sleeps that long per row, so one worker process
handles at most 1e6 / us events per second however many partitions it runs. That makes
a worker's capacity a known number on any machine, busy or not, which is what the
autoscaler test needs (its decisions follow from measured capacity, and a CPU-bound
step's capacity would change with the load of the machine running the tests).
"""

import os
import threading
import time
from pathlib import Path

import dagster as dg
import polars as pl

from dataflare_platform.definitions import resources
from dataflare_platform.defs.streams.factory import pipeline_definitions
from dataflare_platform.engine.pipeline import Stream
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform.streams.steps.registry import STEPS, StepContext

SPEC_ENV = "DFTEST_PIPELINE_SPEC"
_ONE_AT_A_TIME = threading.Lock()


def _costly(stream: Stream, us_per_event: float, context: StepContext) -> Stream:
    def cost(frame: pl.DataFrame) -> pl.DataFrame:
        with _ONE_AT_A_TIME:
            time.sleep(frame.height * us_per_event / 1e6)
        return frame

    return stream.map_batches(cost, name="costly")


if STEPS.get("costly") is None:
    STEPS.register("costly", float, _costly)

defs = dg.Definitions.merge(
    pipeline_definitions(PipelineSpec.from_yaml(Path(os.environ[SPEC_ENV]))),
    dg.Definitions(resources=resources),
)
