"""Declarative pipelines: where the shipped ones are (``load_specs``: the
StreamPipelineComponent instances under ``defs/`` and the Python builders of
``builders/``) and how one is run over an offset range of its topics: what a
sensor-triggered Dagster run does (no Dagster here)."""

from dataflare_platform.pipelines.ranges import (
    PIPELINES_DIR,
    load_specs,
    pending_range,
    run_range,
    source_ends,
)

__all__ = ["PIPELINES_DIR", "load_specs", "pending_range", "run_range", "source_ends"]
