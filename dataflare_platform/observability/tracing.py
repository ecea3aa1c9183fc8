"""Traces that follow the data: one tracer provider per process, and the run tag that
carries the W3C trace context from a launch into the run.

``tracer()`` returns the platform's tracer, configured from the deployment's environment
on first use (``ObservabilitySettings.from_env``: ``OTEL_TRACES_EXPORTER``,
``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), or ``None`` when
traces are off (the default): callers hold the result and skip all work on ``None``, as
with metrics. The provider is the platform's own, never the global one, so an
application embedding the platform keeps its own set-up.

Sampling is ``ParentBased(TraceIdRatioBased(ratio))``: the ratio decides at the root
(a sensor tick, a client launch, a run started without a parent) and every span below
follows, so a trace is whole or absent. The context crosses process boundaries in the
run tag :data:`TRACEPARENT_TAG` (a W3C ``traceparent`` value): a sensor adds it to its
``RunRequest``, the Python client and the CLI add it to the launch, and the run
continues the trace from it (:func:`continued`).

The tag is outside the reserved ``dataflare/`` namespace on purpose: any caller may
propagate a trace context (it links spans, it is no identity claim), and the run
coordinator refuses caller tags in that namespace. A malformed value is ignored (a new
trace starts), never an error: tracing must not stop a launch. No Dagster here.
"""

from __future__ import annotations

import contextvars
import hashlib
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from dataflare_platform.observability.settings import ObservabilitySettings

__all__ = [
    "TRACEPARENT_TAG",
    "Tracing",
    "configure_tracing",
    "context_from_tags",
    "continued",
    "inject",
    "run_parent",
    "start_run_span",
    "tracer",
    "tracing",
]

TRACEPARENT_TAG = "otel/traceparent"
SCOPE = "dataflare_platform"
# version-traceid-spanid-flags, lower-case hex (W3C Trace Context level 1).
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_propagator = TraceContextTextMapPropagator()


# The ids the next span started on this context takes (see PinnedIds).
_pinned: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "dataflare_pinned_span_ids", default=None
)


class PinnedIds(RandomIdGenerator):
    """Random ids, except for a span started by :func:`start_run_span`: a Dagster run's
    span has ids derived from the run id, so a step running in another process (the
    multiprocess executor) names it as its parent without any message between the two."""

    def generate_span_id(self) -> int:
        pinned = _pinned.get()
        return super().generate_span_id() if pinned is None else pinned[1]

    def generate_trace_id(self) -> int:
        pinned = _pinned.get()
        return super().generate_trace_id() if pinned is None else pinned[0]


def derived_ids(run_id: str) -> tuple[int, int]:
    """(trace id, span id) of a run's span, from its id alone (both never zero)."""
    digest = hashlib.sha256(f"dataflare/run/{run_id}".encode()).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    return trace_id, span_id


class Tracing:
    """The process's tracer provider and tracer (``memory``: the exporter for tests)."""

    def __init__(self, settings: ObservabilitySettings) -> None:
        attributes: dict[str, str] = {"service.name": settings.service_name}
        attributes.update(settings.resource)
        self.root_sampler = TraceIdRatioBased(settings.trace_sample_ratio)
        # Resource.create also merges OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME (the
        # settings parsed the same variables, so they agree).
        self.provider = TracerProvider(
            resource=Resource.create(attributes),
            sampler=ParentBased(self.root_sampler),
            id_generator=PinnedIds(),
        )
        self.memory: InMemorySpanExporter | None = None
        exporter: SpanExporter
        if settings.traces_exporter == "memory":
            self.memory = exporter = InMemorySpanExporter()
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif settings.traces_exporter == "console":
            self.provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        else:  # otlp: imported here, so processes with traces off never load requests/protobuf
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=settings.otlp_traces_endpoint)
            # Batched in a background thread: the engine never waits on the collector.
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer(SCOPE)

    def flush(self, timeout_ms: int = 10_000) -> bool:
        """Send what is buffered (a run worker calls it before it exits)."""
        return self.provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        self.provider.shutdown()


_lock = threading.Lock()
_UNSET = object()
_current: object = _UNSET


def configure_tracing(settings: ObservabilitySettings | None) -> Tracing | None:
    """Set this process's tracing (``None`` or ``traces_exporter='none'``: off)."""
    global _current
    with _lock:
        if isinstance(_current, Tracing):
            _current.shutdown()
        on = settings is not None and settings.traces_exporter != "none"
        _current = Tracing(settings) if on else None  # type: ignore[arg-type]
        return _current  # type: ignore[return-value]


def tracing() -> Tracing | None:
    """The process's tracing, configured from the environment on first call."""
    current = _current
    if current is _UNSET:
        return configure_tracing(ObservabilitySettings.from_env())
    return current  # type: ignore[return-value]


def tracer() -> trace.Tracer | None:
    """The platform's tracer, or ``None`` when traces are off."""
    current = tracing()
    return None if current is None else current.tracer


def flush() -> None:
    """Export buffered spans now (before a process ends or hands over a run)."""
    current = tracing()
    if current is not None:
        current.flush()


def inject(tags: Mapping[str, str], context: Context | None = None) -> dict[str, str]:
    """``tags`` plus the trace context of ``context`` (default: the current one) in
    :data:`TRACEPARENT_TAG`; unchanged when there is no valid span."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=context)
    out = dict(tags)
    if "traceparent" in carrier:
        out[TRACEPARENT_TAG] = carrier["traceparent"]
    return out


def context_from_tags(tags: Mapping[str, str] | None) -> Context | None:
    """The remote parent a run's tags carry, or ``None`` (no tag, or not W3C)."""
    value = (tags or {}).get(TRACEPARENT_TAG)
    if not value or not _TRACEPARENT.match(value):
        return None
    context = _propagator.extract({"traceparent": value})
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


@contextmanager
def continued(
    name: str,
    tags: Mapping[str, str] | None = None,
    attributes: Mapping[str, str | int | float | bool] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span | None]:
    """A span named ``name``, child of the context in ``tags`` if any (else of the
    current span, else a new trace), current for the block; ``None`` when traces are
    off. An exception ends it with status ERROR (its type, never its text: an error's
    message may quote data) and propagates."""
    t = tracer()
    if t is None:
        yield None
        return
    parent = context_from_tags(tags)
    span = t.start_span(name, context=parent, kind=kind, attributes=attributes)
    try:
        with trace.use_span(
            span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        ):
            yield span
    except BaseException as err:
        span.set_status(Status(StatusCode.ERROR, type(err).__name__))
        span.set_attribute("error.type", type(err).__qualname__)
        raise
    finally:
        span.end()


def run_parent(run_id: str, tags: Mapping[str, str] | None) -> Context | None:
    """The context naming run ``run_id``'s span as parent (for its steps, in any process),
    or ``None`` when traces are off. Its trace and sampled flag are those of the launch's
    context in ``tags``; without one, the run's span is a root whose trace id derives from
    the run id, and the ratio sampler decides on that id, as it did for the run span."""
    current = tracing()
    if current is None:
        return None
    trace_id, span_id = derived_ids(run_id)
    launch = context_from_tags(tags)
    if launch is not None:
        parent = trace.get_current_span(launch).get_span_context()
        trace_id, flags = parent.trace_id, parent.trace_flags
    else:
        decision = current.root_sampler.should_sample(None, trace_id, "dagster.run").decision
        sampled = decision == Decision.RECORD_AND_SAMPLE
        flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
    return trace.set_span_in_context(NonRecordingSpan(context))


def start_run_span(
    name: str,
    run_id: str,
    tags: Mapping[str, str] | None,
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> Span | None:
    """Start run ``run_id``'s span (kind CONSUMER, child of the launch's context in
    ``tags``), with the ids :func:`run_parent` gives its steps; ``None`` when off."""
    t = tracer()
    if t is None:
        return None
    token = _pinned.set(derived_ids(run_id))
    try:
        return t.start_span(
            name, context=context_from_tags(tags), kind=SpanKind.CONSUMER, attributes=attributes
        )
    finally:
        _pinned.reset(token)
