"""Every Dagster run and step as a span, for every job of the instance, with no code in
the jobs: a log handler the instance hands Dagster's events to.

``dagster.yaml`` names :class:`RunSpanHandler` under
``python_logs.dagster_handler_config``; Dagster then gives it each event of each run in
the process that emits it (run worker: the run's start and end; step process: the step's
start and end), whatever launched the run (UI, sensor, schedule, backfill, client,
retry) and whatever executor runs the steps. Why a handler and not a job ``@logger``: a
job's loggers exist only when the run config names them (a launch from the UI names
none); why not a hook: Dagster's hooks run after a step, not around it.

- ``RUN_START`` starts ``dagster.run <job>`` (kind CONSUMER), the child of the launch's
  trace context in the ``otel/traceparent`` run tag (a sensor tick, the client, the CLI);
  the run's end event ends it.
- ``STEP_START`` starts ``dagster.step <step>`` under the run's span and makes it the
  current span of the step's thread until the step's end event, so whatever the step
  does (the engine's ``dataflare.pipeline`` span and its batches) nests below. The step
  may run in another process than the run span: the run span's ids derive from the run
  id (``observability.tracing.run_parent``), so no message passes between them.

Spans are exported when they end (``flush``: a step process may exit right after).
Tracing must never break a run: any error here is dropped, as the logging module does.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from dataflare_platform.observability import tracing

RUN_START = "PIPELINE_START"
RUN_ENDS = {
    "PIPELINE_SUCCESS": None,
    "PIPELINE_FAILURE": "failure",
    "PIPELINE_CANCELED": "canceled",
}
STEP_START = "STEP_START"
STEP_ENDS = {"STEP_SUCCESS": None, "STEP_FAILURE": "failure"}
PARTITION_TAG = "dagster/partition"
PIPELINE_TAG = "dataflare/pipeline"

# Open spans of this process, by run id / (run id, step key): Dagster builds a new handler
# for each log manager (each run and each step), so the state is the module's.
_lock = threading.Lock()
_runs: dict[str, Span] = {}
_steps: dict[tuple[str, str], tuple[Span, object]] = {}


def _attributes(meta: Mapping[str, Any]) -> dict[str, str]:
    tags: Mapping[str, str] = meta.get("job_tags") or {}
    out = {"dagster.run_id": meta["run_id"], "dagster.job": meta.get("job_name") or ""}
    if tags.get(PARTITION_TAG):
        out["dagster.partition"] = tags[PARTITION_TAG]
    if tags.get(PIPELINE_TAG):
        out["dataflare.pipeline"] = tags[PIPELINE_TAG]
    return out


def _end(span: Span, outcome: str | None) -> None:
    if outcome is not None:
        span.set_status(Status(StatusCode.ERROR, outcome))
        span.set_attribute("error.type", outcome)
    span.end()


class RunSpanHandler(logging.Handler):
    """Turns Dagster's run and step events into spans (see the module)."""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # tracing never breaks a run
            self._handle(record)

    def _handle(self, record: logging.LogRecord) -> None:
        event = getattr(record, "dagster_event", None)
        meta = getattr(record, "dagster_meta", None)
        if event is None or not meta or not meta.get("run_id"):
            return
        kind = event.event_type_value
        if kind not in (RUN_START, STEP_START) and kind not in RUN_ENDS and kind not in STEP_ENDS:
            return
        if tracing.tracer() is None:
            return
        run_id: str = meta["run_id"]
        tags: Mapping[str, str] = meta.get("job_tags") or {}
        if kind == RUN_START:
            span = tracing.start_run_span(
                f"dagster.run {meta.get('job_name')}", run_id, tags, _attributes(meta)
            )
            if span is not None:
                with _lock:
                    _runs[run_id] = span
        elif kind in RUN_ENDS:
            with _lock:
                span = _runs.pop(run_id, None)
            if span is not None:
                _end(span, RUN_ENDS[kind])
                tracing.flush()
        elif kind == STEP_START and event.step_key:
            t = tracing.tracer()
            parent = tracing.run_parent(run_id, tags)
            if t is None or parent is None:
                return
            attributes = _attributes(meta)
            attributes["dagster.step"] = event.step_key
            span = t.start_span(f"dagster.step {event.step_key}", parent, attributes=attributes)
            # Current on the step's thread (Dagster runs the step's code on the thread
            # that logs its start) until its end event.
            token = otel_context.attach(trace.set_span_in_context(span))
            with _lock:
                _steps[(run_id, event.step_key)] = (span, token)
        elif kind in STEP_ENDS and event.step_key:
            with _lock:
                entry = _steps.pop((run_id, event.step_key), None)
            if entry is not None:
                span, token = entry
                try:
                    otel_context.detach(token)  # type: ignore[arg-type]
                finally:
                    _end(span, STEP_ENDS[kind])
                    tracing.flush()
