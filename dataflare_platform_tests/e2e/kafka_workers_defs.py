"""A code location for the Kafka worker e2e test: the platform's shared resources and
the definitions (asset, jobs, sensors, ``<pipeline>_workers``) of one stream pipeline,
read from the spec file ``DFTEST_PIPELINE_SPEC`` names. The pipeline reads a topic of
the mock Kafka cluster the test process holds, so it cannot be a shipped pipeline."""

import os
from pathlib import Path

import dagster as dg

from dataflare_platform.definitions import resources
from dataflare_platform.defs.streams.factory import pipeline_definitions
from dataflare_platform.streams.spec import PipelineSpec

SPEC_ENV = "DFTEST_PIPELINE_SPEC"

defs = dg.Definitions.merge(
    pipeline_definitions(PipelineSpec.from_yaml(Path(os.environ[SPEC_ENV]))),
    dg.Definitions(resources=resources),
)
