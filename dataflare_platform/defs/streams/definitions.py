"""The streams domain's shared definitions: one external asset per topic that any
pipeline reads, and the pipelines written with the Python builder API
(``pipelines/builders/*.py``).

Each YAML pipeline is a StreamPipelineComponent instance (``<pipeline>/defs.yaml`` in
this folder, or anywhere under ``defs/``) that builds its own asset, job and sensors; the
topics are shared between pipelines, so they are declared here, once, for every shipped
pipeline. ``load_specs`` reads the same instance files as dg (and refuses two pipelines
with one name), without importing the component: components sit above ``defs``.
"""

import dagster as dg

from dataflare_platform.defs.streams.factory import pipeline_definitions, topic_definitions
from dataflare_platform.defs.streams.intervals import sensor_interval_override
from dataflare_platform.streams.python_specs import load_python_specs
from dataflare_platform.streams.ranges import PIPELINES_DIR, load_specs


def _definitions() -> dg.Definitions:
    built = [spec for _, spec in load_python_specs(PIPELINES_DIR)]
    interval_s = sensor_interval_override()
    return dg.Definitions.merge(
        topic_definitions(load_specs(), interval_s),
        *(pipeline_definitions(spec, interval_s) for spec in built),
    )


defs = _definitions()
