"""The runner's spans: the pipeline run, each micro-batch, each plugin call, each sink
write. Span per batch, never per row.

``RunTrace.start`` returns ``None`` when traces are off *or* when the run's span is not
sampled (``ParentBased`` sampling: the batches of an unsampled run would be dropped
anyway), so the runner's hot path pays one ``None`` check per batch in both cases.

Names and attributes follow the OpenTelemetry messaging semantic conventions for
consumers: a source batch is a ``process <source>`` span of kind CONSUMER with
``messaging.system``, ``messaging.destination.name`` (the source),
``messaging.destination.partition.id``, ``messaging.batch.message_count`` and
``messaging.operation.type``/``name``; the offsets it covers are ``dataflare.offset.*``.
A sink commit makes the output of several source batches durable at once (sources and
partitions merged): it is a ``send <sink>`` span of kind PRODUCER with a **link** to each
batch span it covers (a sink without transactions: one per write).

A continuous run never ends, so its ``dataflare.pipeline`` span (exported when the run
stops) cannot be the parent of its batches: a trace would grow for days and its spans
would wait for a parent no backend has yet. Each **checkpoint interval** is a trace of its
own instead, as the messaging conventions advise for long-running consumers: a bounded
``dataflare.checkpoint_interval <pipeline>`` root span with a link to the run's span,
holding the interval's batches, plugin calls and the commit that ends it, exported when
the commit is done. The sampling ratio decides per interval (1 % of a continuous run's
intervals at 1 %), so a long run is sampled evenly instead of all or nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode

from dataflare_platform.engine.operators.plugin import PluginOperator
from dataflare_platform.observability.tracing import tracer

if TYPE_CHECKING:
    from dataflare_platform.engine.pipeline import Pipeline

MESSAGING_SYSTEM = "dataflare"


class RunTrace:
    """One run's spans. The run span is started on the caller's thread (so it is the
    child of whatever span is current there: the Dagster step, a client launch); batch
    spans on the operator thread, sink spans on the sink thread, each with an explicit
    parent (threads do not share the current context)."""

    def __init__(
        self, t: trace.Tracer, run_span: Span, pipeline: Pipeline, continuous: bool = False
    ) -> None:
        self.t = t
        self.run = run_span
        self.run_context = trace.set_span_in_context(run_span)
        self.continuous = continuous
        self.interval: Span | None = None  # the open checkpoint interval (continuous runs)
        self.interval_context: Context = self.run_context
        self.intervals = 0
        self.pipeline = pipeline.name
        self.sink_name = type(pipeline.sink).__name__
        self.batch: Span | None = None  # the batch being processed (operator thread)
        self.batch_context = self.run_context
        self.pending: list[SpanContext] = []  # batches not yet made durable by the sink
        self.rows = 0  # their output rows (operator thread)
        self._lock = threading.Lock()
        # Plugin steps (the WASM slot): one span per call.
        self.plugins = {
            n.id for n in pipeline.operators() if isinstance(n.operator, PluginOperator)
        }

    @classmethod
    def start(cls, pipeline: Pipeline, mode: str) -> RunTrace | None:
        t = tracer()
        if t is None:
            return None
        span = t.start_span(
            f"dataflare.pipeline {pipeline.name}",
            attributes={"dataflare.pipeline": pipeline.name, "dataflare.run.mode": mode},
        )
        continuous = mode == "continuous"
        if not span.is_recording() and not continuous:
            span.end()
            return None
        # A continuous run's intervals are sampled on their own (see the module).
        return cls(t, span, pipeline, continuous)

    def end(self, error: BaseException | None) -> None:
        if error is not None:
            self.run.set_status(Status(StatusCode.ERROR, type(error).__name__))
            self.run.set_attribute("error.type", type(error).__qualname__)
        if self.interval is not None:  # batches no checkpoint made durable (an error)
            self.interval_ended(self.interval, error)
            self.interval = None
        self.run.end()

    def _batch_parent(self) -> Context:
        """The parent of the next batch: the run, or the open checkpoint interval."""
        if not self.continuous:
            return self.run_context
        if self.interval is None:
            self.intervals += 1
            run = self.run.get_span_context()
            self.interval = self.t.start_span(
                f"dataflare.checkpoint_interval {self.pipeline}",
                context=Context(),  # a root: a trace per interval
                kind=SpanKind.CONSUMER,
                links=[Link(run)] if run.is_valid else None,
                attributes={
                    "dataflare.pipeline": self.pipeline,
                    "dataflare.run.mode": "continuous",
                    "dataflare.checkpoint_interval.number": self.intervals,
                },
            )
            self.interval_context = trace.set_span_in_context(self.interval)
        return self.interval_context

    def interval_ended(self, interval: Span, error: BaseException | None = None) -> None:
        """End a checkpoint interval (sink thread, after its commit)."""
        if error is not None:
            interval.set_status(Status(StatusCode.ERROR, type(error).__name__))
            interval.set_attribute("error.type", type(error).__qualname__)
        interval.end()

    # -- operator thread -------------------------------------------------------------------
    def batch_started(self, key: str, start: int, end: int, rows: int) -> None:
        source, _, partition = key.partition("/")
        parent = self._batch_parent()
        if self.interval is not None and not self.interval.is_recording():
            # An unsampled interval: its batches and plugin calls are not traced (their
            # spans would be dropped anyway); one check per batch.
            self.batch = None
            self.batch_context = parent
            return
        span = self.t.start_span(
            f"process {source}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": MESSAGING_SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": source,
                "messaging.destination.partition.id": partition,
                "messaging.batch.message_count": rows,
                "messaging.consumer.group.name": self.pipeline,
                "dataflare.pipeline": self.pipeline,
                "dataflare.offset.start": start,
                "dataflare.offset.end": end,
            },
        )
        self.batch = span
        self.batch_context = trace.set_span_in_context(span)

    def batch_ended(self, dead_letters: int, error: BaseException | None = None) -> None:
        span = self.batch
        if span is None:
            return
        if dead_letters:
            span.set_attribute("dataflare.dead_letters", dead_letters)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.set_attribute("error.type", type(error).__qualname__)
        span.end()
        with self._lock:
            self.pending.append(span.get_span_context())
        self.batch = None
        self.batch_context = self.interval_context if self.continuous else self.run_context

    @contextmanager
    def plugin_call(self, step: str, rows: int) -> Iterator[Span]:
        """A call into a WASM plugin for one batch, child of that batch's span."""
        span = self.t.start_span(
            f"dataflare.plugin {step}",
            context=self.batch_context,
            attributes={
                "dataflare.pipeline": self.pipeline,
                "dataflare.step": step,
                "dataflare.plugin.rows_in": rows,
            },
        )
        try:
            yield span
        except BaseException as err:
            # A rejected batch (trap, timeout, fuel...) is contained by the runner; the
            # span says so by type, never with the message (it may quote data).
            span.set_status(Status(StatusCode.ERROR, type(err).__name__))
            span.set_attribute("error.type", type(err).__qualname__)
            raise
        finally:
            span.end()

    def take_links(self, checkpoint: bool) -> tuple[list[SpanContext], int, Span | None]:
        """The batches (and their output rows) the next commit makes durable, and the
        checkpoint interval that commit closes (continuous runs, at a checkpoint)."""
        with self._lock:
            pending, self.pending = self.pending, []
        rows, self.rows = self.rows, 0
        interval = None
        if self.continuous and checkpoint:
            if self.interval is None:  # a commit with no batch since the last (a stop)
                self._batch_parent()
            interval, self.interval = self.interval, None
            self.interval_context = self.run_context
        return pending, rows, interval

    # -- sink thread -----------------------------------------------------------------------
    def sink_write(
        self, links: list[SpanContext], rows: int, interval: Span | None, checkpoint: bool
    ) -> Span:
        if interval is not None:
            parent = trace.set_span_in_context(interval)
        elif self.continuous:  # a write between checkpoints: in the open interval
            parent = self.interval_context
        else:
            parent = self.run_context
        return self.t.start_span(
            f"send {self.sink_name}",
            context=parent,
            kind=SpanKind.PRODUCER,
            links=[Link(c) for c in links],
            attributes={
                "messaging.system": MESSAGING_SYSTEM,
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "messaging.destination.name": self.pipeline,
                "messaging.batch.message_count": rows,
                "dataflare.pipeline": self.pipeline,
                "dataflare.checkpoint": checkpoint,
                "dataflare.batches_merged": len(links),
            },
        )
