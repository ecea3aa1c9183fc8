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
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from dataflare_platform.observability.settings import ObservabilitySettings

__all__ = [
    "TRACEPARENT_TAG",
    "Tracing",
    "configure_tracing",
    "context_from_tags",
    "continued",
    "inject",
    "tracer",
    "tracing",
]

TRACEPARENT_TAG = "otel/traceparent"
SCOPE = "dataflare_platform"
# version-traceid-spanid-flags, lower-case hex (W3C Trace Context level 1).
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_propagator = TraceContextTextMapPropagator()


class Tracing:
    """The process's tracer provider and tracer (``memory``: the exporter for tests)."""

    def __init__(self, settings: ObservabilitySettings) -> None:
        attributes: dict[str, str] = {"service.name": settings.service_name}
        attributes.update(settings.resource)
        self.provider = TracerProvider(
            resource=Resource.create(attributes),
            sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
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
