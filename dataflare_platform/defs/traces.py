"""The Dagster run and step as spans, continuing the trace of whoever launched the run.

The launch (a sensor tick, ``DataflareClient.launch_job``, ``dataflare launch``) puts its
W3C trace context in the run tag ``otel/traceparent``
(``observability.tracing.TRACEPARENT_TAG``); the run worker is another process, so the
step code reads the tag back and opens ``dagster.run <job>`` (kind CONSUMER, the launch's
child) and ``dagster.step <op>`` under it. The engine's ``dataflare.pipeline`` span and its
batches nest below. Traces off: two ``None`` checks and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from opentelemetry.trace import SpanKind

from dataflare_platform.observability import tracing

PARTITION_TAG = "dagster/partition"


@contextmanager
def traced_step(context: dg.AssetExecutionContext, pipeline: str | None = None) -> Iterator[None]:
    """Run the block inside the run's and the step's spans; the spans are exported
    before the step returns (a run worker may exit right after its last step)."""
    if tracing.tracer() is None:
        yield
        return
    run = context.run
    tags = dict(run.tags)
    origin = run.remote_job_origin
    attributes: dict[str, str] = {"dagster.run_id": run.run_id, "dagster.job": run.job_name}
    if origin is not None:
        attributes["dagster.code_location"] = origin.location_name
    if tags.get(PARTITION_TAG):
        attributes["dagster.partition"] = tags[PARTITION_TAG]
    if pipeline:
        attributes["dataflare.pipeline"] = pipeline
    try:
        with tracing.continued(
            f"dagster.run {run.job_name}", tags=tags, attributes=attributes, kind=SpanKind.CONSUMER
        ):
            step = context.op_def.name
            with tracing.continued(f"dagster.step {step}", attributes={"dagster.step": step}):
                yield
    finally:
        tracing.flush()
