"""The micro-batch runner: source thread → operator graph → sink thread.

Bounded queues connect the three, so a slow sink blocks the operators, which block the
source: ingestion slows down instead of memory growing. Queue depths and time spent
blocked are reported in the metrics.

Modes:
- bounded: read every partition up to its end offset (or ``until``), then let the
  watermark reach the end of time so every window fires, commit and stop;
- continuous: keep polling sources until ``stop`` is set; then finish the batch in
  flight, checkpoint and return (a later run resumes from that checkpoint).
"""

from __future__ import annotations

import contextvars
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.ma  # see below
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

# ``numpy.ma`` is imported by Polars on its first ``pl.Series(ndarray)`` (it checks for
# masked arrays), which the runner and operators build on every batch: ~15 ms that the
# first batch of every run paid (its latency 13 ms against ~1 ms after, issue 21 §5).
# Imported with the engine, it is paid before ``Runner.run()`` starts the clock of the
# first batch.
from dataflare_platform.engine.checkpoint import Checkpoint, split_into
from dataflare_platform.engine.metrics import EngineMetrics, MetricsListener, OperatorMetrics
from dataflare_platform.engine.operators.base import WM_COL
from dataflare_platform.engine.pipeline import Pipeline
from dataflare_platform.engine.sinks import side_rows
from dataflare_platform.engine.telemetry import EngineTelemetry
from dataflare_platform.engine.traces import RunTrace
from dataflare_platform.engine.watermarks import MAX_WATERMARK, MIN_WATERMARK, WatermarkTracker
from dataflare_platform.errors import (
    BatchRejectedError,
    ConflictError,
    DataflareError,
    InvalidInputError,
)
from dataflare_platform.observability import instruments
from dataflare_platform.observability.logs import (
    DropTally,
    context_with,
    log_context,
    set_context,
)
from dataflare_platform.times import now_ms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunnerConfig:
    batch_rows: int = 10_000
    checkpoint_every: int = 50  # batches between checkpoints (and sink commits)
    source_queue: int = 4  # batches buffered between source and operators
    sink_queue: int = 4  # batches buffered between operators and sink
    rate: float | None = None  # pace the source to this many events/s (latency tests)
    poll_interval_s: float = 0.05  # continuous mode: wait when no source has data
    # Also checkpoint when this much time went by since the last checkpoint and batches
    # came in (a trickling continuous stream would otherwise wait checkpoint_every batches).
    checkpoint_interval_s: float | None = None
    # Circuit breaker: a step that rejects this many source batches in a row (each one
    # dead-lettered whole: an expression failing at run time, a plugin trapping or
    # quarantined) stops the run with the step and its last reason, instead of
    # dead-lettering everything that comes. Nothing after the last checkpoint commits.
    max_failed_batches: int = 10

    def __post_init__(self) -> None:
        for name in (
            "batch_rows",
            "checkpoint_every",
            "source_queue",
            "sink_queue",
            "max_failed_batches",
        ):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be at least 1")
        if self.checkpoint_interval_s is not None and self.checkpoint_interval_s <= 0:
            raise InvalidInputError("checkpoint_interval_s must be positive")


@dataclass
class _SourceBatch:
    key: str  # "source/partition"
    node: str
    start: int
    end: int
    table: pa.Table
    ingest: float
    frame: pl.DataFrame | None = None  # the table as Polars, when its schema conforms
    newest: int | None = None  # highest event time (ms) in the batch


@dataclass
class _Finished:
    key: str


@dataclass
class _SinkItem:
    output: pl.DataFrame | None
    side: pl.DataFrame | None
    ingest: list[float]
    checkpoint: Checkpoint | None
    # (span contexts of the batches it makes durable, their output rows): traces on
    links: tuple[list, int, Any] | None = None  # RunTrace.take_links()


_END = object()


# Rows per block in ``_none_behind``: small enough that a block spans far less event time
# than any sensible out-of-orderness bound, large enough that the per-block arrays are
# tiny.
_BLOCK_ROWS = 1024


def _none_behind(times: np.ndarray, prev: int, delay_ms: int, emitted: int) -> int | None:
    """The batch's newest event time if no row is behind its row watermark, else None
    (then maybe some are: the caller works out the per-row watermark exactly).

    A row's watermark is at most max(its own partition's running maximum before it -
    ``delay_ms``, the emitted watermark). The running maximum before a row is at most the
    running maximum up to the end of the row's block, so a block whose smallest time is
    at least that bound minus ``delay_ms`` holds no row behind. Two vectorised
    reductions per block instead of a per-row running maximum and five full-length
    temporaries: ~40 us instead of ~0.4-1.6 ms for 64k rows (measured), where the exact
    computation was a third of a windowed query's time at large batches."""
    n = len(times)
    whole = n - n % _BLOCK_ROWS
    highs, lows = [], []
    if whole:
        body = times[:whole].reshape(-1, _BLOCK_ROWS)
        highs.append(body.max(axis=1))
        lows.append(body.min(axis=1))
    if whole < n:
        tail = times[whole:]
        highs.append(tail.max(keepdims=True))
        lows.append(tail.min(keepdims=True))
    high = np.concatenate(highs) if len(highs) > 1 else highs[0]
    low = np.concatenate(lows) if len(lows) > 1 else lows[0]
    upto = np.maximum.accumulate(np.maximum(high, prev))
    if int(low.min()) < emitted or (low < upto - delay_ms).any():
        return None
    return int(upto[-1])


def _conforms(actual: pa.Schema, expected: pa.Schema) -> bool:
    if actual.equals(expected):
        return True
    names = set(actual.names)
    return all(f.name in names and actual.field(f.name).type.equals(f.type) for f in expected)


@dataclass
class RunResult:
    metrics: EngineMetrics
    checkpoint: Checkpoint
    seconds: float
    # Every source had an end (a file, a snapshot of a stream opened bounded) and was read
    # to it, so the watermark went to the end and every window closed. A run to ``until``
    # over a growing stream (a broker range run) is not finished even when it read every
    # row up to ``until``: its open windows stay in state for the next range.
    finished: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "seconds": round(self.seconds, 4),
            "finished": self.finished,
            **self.metrics.as_dict(),
        }


class EngineError(DataflareError, RuntimeError):
    pass


class _StepFailedError(Exception):
    """A stateful step failed on the source batch being processed (a Polars failure, or
    a plugin's contained rejection): the runner rolls the whole batch back and
    dead-letters it. Internal: it never leaves the runner."""

    def __init__(self, node_id: str, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.node_id, self.reason, self.kind = node_id, reason, kind


@dataclass
class _Savepoint:
    """Everything a source batch may change besides its offset and input counters:
    operator state, the watermark tracker, outputs and side rows taken so far, and the
    counters a rolled-back batch must not leave behind."""

    states: dict[str, object]
    max_seen: dict[str, int]
    finished: set[str]
    last_active: dict[str, float]
    emitted: int
    outputs: int
    sides: int
    late_events: int
    dead_letters: int
    dead_by_reason: dict[str, int]
    operators: dict[str, OperatorMetrics]
    watermark: tuple[int | None, int | None]


class StateRestoreError(EngineError):
    """A step refused the state its last checkpoint holds (a plugin's state written by
    another plugin, version or module, or damaged). The message names the pipeline, the
    step and ``dataflare pipeline reset-state``, the deliberate way out."""


class PipelineHaltedError(EngineError):
    """The circuit breaker stopped a run: one step rejected ``max_failed_batches``
    source batches in a row. The message names the step and its last reason."""


# Polars' own failures of one batch: a cast of a value that does not convert, a column
# the batch lacks, arithmetic that overflows... (a panic inside Polars is a
# ``PanicException``, which derives from ``BaseException``).
_POLARS_FAILURES = (pl.exceptions.PolarsError, pl.exceptions.PanicException)


def polars_reason(err: BaseException) -> str:
    """One line about a Polars failure, without the sample values Polars lists (a row's
    values belong in the dead letters, not in an error message or a log)."""
    lines = str(err).strip().splitlines()
    line = lines[0] if lines else ""
    line = re.sub(r"\bvalues?: \[.*$", "values", line)
    if len(line) > 300:
        line = line[:297] + "..."
    return f"{type(err).__name__}: {line}" if line else type(err).__name__


@dataclass
class Runner:
    pipeline: Pipeline
    config: RunnerConfig = field(default_factory=RunnerConfig)
    listener: MetricsListener | None = None
    # Called on the sink thread once a checkpoint is committed with the output before it
    # (the checkpoint's offsets and counters are then durable).
    on_commit: Callable[[Checkpoint, EngineMetrics], None] | None = None

    def run(
        self,
        mode: Literal["bounded", "continuous"] = "bounded",
        until: dict[str, int] | None = None,
        stop: threading.Event | None = None,
    ) -> RunResult:
        self.pipeline.validate()
        return _Run(self, mode, until or {}, stop or threading.Event()).execute()


class _Run:
    def __init__(
        self, runner: Runner, mode: str, until: dict[str, int], stop: threading.Event
    ) -> None:
        self.p = runner.pipeline
        self.cfg = runner.config
        self.listener = runner.listener
        self.on_commit = runner.on_commit
        self.mode = mode
        self.until = until
        self.stop = stop
        self.sink = self.p.sink
        self.metrics = EngineMetrics()
        self.tracker = WatermarkTracker(self.p.out_of_orderness_ms, self.p.idle_timeout_ms)
        self.offsets: dict[str, int] = {}
        self.ends: dict[str, int | None] = {}  # where this run stops reading
        self.source_ends: dict[str, int | None] = {}  # where the data ends
        self.source_q: queue.Queue = queue.Queue(self.cfg.source_queue)
        self.sink_q: queue.Queue = queue.Queue(self.cfg.sink_queue)
        self.errors: list[BaseException] = []
        self.batches_since_checkpoint = 0
        self.checkpointed_at = time.monotonic()
        # Checkpoints taken (batch thread) and committed by the sink (sink thread): one in
        # flight at a time, see ``_flush``. Each counter has one writer.
        self._checkpoints_taken = 0
        self._checkpoints_committed = 0
        self._checkpoint_deferred = False  # a due checkpoint waits for the one in flight
        # Circuit breaker: whole-batch rejections during the current source batch, and
        # source batches in a row that had one (with the last step and reason).
        self._rejections = 0
        self._failed_in_a_row = 0
        self._last_rejection = ("", "")
        self._in_batch = False  # a source batch is being processed (it can be rolled back)
        self._stateful = [n for n in self.p.operators() if n.operator.stateful]
        self._outputs: list[pl.DataFrame] = []
        self._sides: list[pl.DataFrame] = []
        for node in self.p.operators():
            self.metrics.operators[node.id] = OperatorMetrics()
        # Operators' own counters at the start, so each run reports its own increase.
        self._own_base = {node.id: node.operator.stats() for node in self.p.operators()}
        self.row_watermarks = any(n.operator.uses_watermark for n in self.p.operators())
        self.telemetry: EngineTelemetry | None = None  # set in execute when metrics are on
        self.trace: RunTrace | None = None  # set in execute when this run is traced
        # Dead-lettered and late rows: a WARNING line with the count (at most one per
        # 10 s, and one at the end of the run) and dataflare_data_dropped_total.
        self.drops = DropTally(log, "engine", self._describe_drop)

    def _describe_drop(self, reason: str, count: int) -> str:
        if reason == "late":
            return (
                f"pipeline {self.p.name!r}: {count} late rows (behind the watermark by more"
                " than the allowed lateness) went to the side output, not the result"
            )
        return f"pipeline {self.p.name!r}: {count} rows dead-lettered (see the dead letters)"

    def _drop_totals(self) -> dict[str, int]:
        return {"dead_lettered": self.metrics.dead_letters, "late": self.metrics.late_events}

    # -- set-up --------------------------------------------------------------------------
    def _restore(self) -> None:
        known = self.p.partition_keys()
        unknown = sorted(set(self.until) - known)
        if unknown:
            # A bounded run told to stop at a partition it does not read would never stop.
            raise InvalidInputError(
                f"until names unknown source partitions {unknown}; known: {sorted(known)}"
            )
        checkpoint = self.sink.open(self.p.checkpoint_key or self.p.name)
        for node in self.p.sources():
            for partition in node.source.partitions():
                key = f"{node.source.name}/{partition}"
                self.offsets[key] = 0
                end = node.source.end_offset(partition) if self.mode == "bounded" else None
                self.source_ends[key] = end
                self.ends[key] = self.until.get(key, end)
                self.tracker.register(key)
        if checkpoint is None:
            return
        if split_into(checkpoint):
            # Its progress now lives in per-partition checkpoints (``streams.split``); from
            # here it would read those partitions again and write their output twice.
            name = self.p.checkpoint_key or self.p.name
            raise ConflictError(
                f"pipeline {self.p.name!r} was switched to partition-parallel workers: its"
                f" progress is carried on in {split_into(checkpoint)} per-partition"
                f" checkpoints ({name}#p0, ...), and checkpoint {name!r} is retired."
                " Running it as one run again would need them merged back, which is not"
                " supported (each partition's windows have fired up to a different point):"
                f" keep running it as workers (dataflare scale {self.p.name} --workers N)"
            )
        self.offsets.update(checkpoint.offsets)
        self.tracker.restore(checkpoint.watermark)
        for node in self.p.operators():
            try:
                node.operator.restore(checkpoint.states.get(node.id, {}))
            except DataflareError as err:
                raise StateRestoreError(
                    f"pipeline {self.p.name!r} step {node.id}: its checkpointed state is"
                    f" refused: {err}. To start this step from empty state and keep the"
                    " offsets and the other steps' state:"
                    f" dataflare pipeline reset-state PIPELINE_FILE --step {node.id} --yes"
                ) from err
        m = self.metrics
        c = checkpoint.counters
        m.events_in, m.events_out = c.get("events_in", 0), c.get("events_out", 0)
        m.late_events, m.dead_letters = c.get("late_events", 0), c.get("dead_letters", 0)
        m.checkpoints = c.get("checkpoints", 0)
        m.resumed = {
            "events_in": m.events_in,
            "events_out": m.events_out,
            "late_events": m.late_events,
            "dead_letters": m.dead_letters,
        }

    def checkpoint(self) -> Checkpoint:
        m = self.metrics
        return Checkpoint(
            offsets=dict(self.offsets),
            watermark=self.tracker.snapshot(),
            counters={
                "events_in": m.events_in,
                "events_out": m.events_out,
                "late_events": m.late_events,
                "dead_letters": m.dead_letters,
                "checkpoints": m.checkpoints + 1,
            },
            states={n.id: n.operator.snapshot() for n in self.p.operators()},
            batches=m.batches,
        )

    # -- threads -------------------------------------------------------------------------
    def execute(self) -> RunResult:
        # Every record logged during the run names the pipeline (threads below start
        # with a copy of this context).
        with log_context(pipeline=self.p.name):
            return self._execute()

    def _execute(self) -> RunResult:
        started = time.perf_counter()
        self._restore()
        self.drops.start(self._drop_totals())  # counts restored from a checkpoint are old
        exported = instruments()
        if exported is not None:
            self.telemetry = EngineTelemetry(
                exported,
                self.p.name,
                self.metrics,
                {
                    f"{n.source.name}/{p}": (n.source, p)
                    for n in self.p.sources()
                    for p in n.source.partitions()
                },
            )
        self.trace = RunTrace.start(self.p, self.mode)
        source_thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._guard(self._read),),
            name="df-source",
            daemon=True,
        )
        sink_thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._guard(self._write),),
            name="df-sink",
            daemon=True,
        )
        source_thread.start()
        sink_thread.start()
        finished = False
        try:
            finished = self._process()
        except BaseException as err:
            self.errors.append(err)
            self.stop.set()
        finally:
            self._put(self.sink_q, _END, sink=True)
            sink_thread.join()
            self.stop.set()
            self._drain(self.source_q)
            source_thread.join(timeout=10)
            self.sink.close()
            self.drops.observe(self._drop_totals(), force=True)
        if self.telemetry is not None:
            try:  # even after an error: what was done is counted
                self._export(force=True)
                self.telemetry.flush_latencies()  # the sink thread has ended
            except Exception:
                if not self.errors:
                    raise
                # The run's own error is the one to report, not a metrics read after it
                # (e.g. a source whose topic is gone).
        if self.trace is not None:
            self.trace.end(self.errors[0] if self.errors else None)
        if self.errors:
            raise self.errors[0]
        self._own_stats()
        self._state_rows()  # what the run leaves in state, with or without a listener
        return RunResult(
            self.metrics, self.last_checkpoint, time.perf_counter() - started, finished
        )

    def _guard(self, fn):
        def run() -> None:
            try:
                fn()
            except BaseException as err:
                self.errors.append(err)
                self.stop.set()

        return run

    @staticmethod
    def _drain(q: queue.Queue) -> None:
        while True:
            try:
                q.get_nowait()
            except queue.Empty:
                return

    def _put(self, q: queue.Queue, item, sink: bool = False) -> None:
        """Blocking put that still notices a stop/error; time blocked is measured, and
        puts that found the queue full are counted."""
        t0 = time.perf_counter()
        waited = q.full()
        while True:
            try:
                q.put(item, timeout=0.1)
                break
            except queue.Full:
                if self.errors:
                    if item is not _END:
                        raise EngineError("stopping after an error") from self.errors[0]
                    # The consumer may be gone: make room so the end marker gets through
                    # (nothing queued behind an error is committed anyway).
                    self._drain(q)
        blocked = time.perf_counter() - t0
        if sink:
            self.metrics.sink_blocked_s += blocked
            self.metrics.sink_waits += waited
            self.metrics.max_sink_queue = max(self.metrics.max_sink_queue, q.qsize())
        else:
            self.metrics.source_blocked_s += blocked
            self.metrics.source_waits += waited
            self.metrics.max_source_queue = max(self.metrics.max_source_queue, q.qsize())

    def _read(self) -> None:
        sources = {
            f"{n.source.name}/{p}": (n, p) for n in self.p.sources() for p in n.source.partitions()
        }
        offsets = dict(self.offsets)
        # Log fields per partition; this thread runs in a copied context of its own.
        fields = {key: context_with(source=key) for key in sources}
        progress = {key: MIN_WATERMARK for key in sources}  # event time reached per partition
        done: set[str] = set()
        released = 0
        t0 = time.perf_counter()
        while not self.stop.is_set():
            live = [k for k in sources if k not in done]
            if not live:
                break
            # Read the partition furthest behind in event time: keeps sources aligned,
            # which keeps join and window state small.
            key = min(live, key=lambda k: progress[k])
            node, partition = sources[key]
            end = self.ends[key]
            want = (
                self.cfg.batch_rows if end is None else min(self.cfg.batch_rows, end - offsets[key])
            )
            table = None
            advance = getattr(node.source, "next_offset", None)
            if want > 0:
                set_context(fields[key])  # what a connector logs names its partition
                table = node.source.read(partition, offsets[key], want)
                if advance is not None and table.num_rows == 0:
                    moved = advance(partition)
                    if moved > offsets[key]:  # offsets holding no rows were skipped
                        item = _SourceBatch(
                            key, node.id, offsets[key], moved, table, time.perf_counter()
                        )
                        offsets[key] = moved
                        self._put(self.source_q, item)
                        continue
            if table is None or table.num_rows == 0:
                if end is not None and offsets[key] >= end:
                    done.add(key)
                    source_end = self.source_ends[key]
                    if source_end is not None and offsets[key] >= source_end:
                        # The data itself ends here (not just this run's range).
                        self._put(self.source_q, _Finished(key))
                elif all(progress[k] == MAX_WATERMARK for k in live):
                    time.sleep(self.cfg.poll_interval_s)
                    progress = dict.fromkeys(progress, MIN_WATERMARK)
                else:
                    progress[key] = MAX_WATERMARK  # nothing now: let others go first
                continue
            if self.cfg.rate:
                due = t0 + released / self.cfg.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            released += table.num_rows
            start = offsets[key]
            # Dense sources: one offset per row; others say where the next read starts.
            offsets[key] = start + table.num_rows if advance is None else advance(partition)
            # Conversion and the batch's newest event time are worked out here, on the
            # source thread, off the operators' critical path.
            schema = node.source.schema
            frame, newest = None, None
            if _conforms(table.schema, schema):
                frame = pl.from_arrow(table.select(schema.names))
                column = table.column(node.source.time_column)
                if column.null_count < len(column):
                    newest = pc.max(column).cast(pa.int64()).as_py()
                    progress[key] = newest
            item = _SourceBatch(
                key, node.id, start, offsets[key], table, time.perf_counter(), frame, newest
            )
            self._put(self.source_q, item)
        self._put(self.source_q, _END)

    def _write(self) -> None:
        pending: list[float] = []
        while True:
            item = self.sink_q.get()
            if item is _END:
                return
            span = None
            if item.links is not None and self.trace is not None:
                span = self.trace.sink_write(*item.links, item.checkpoint is not None)
            self.sink.write(item.output, item.side)
            pending.extend(item.ingest)
            if item.checkpoint is not None:
                t0 = time.perf_counter()
                try:
                    self.sink.commit(item.checkpoint)
                except BaseException:
                    if self.telemetry is not None:
                        self.telemetry.checkpoint_failed("commit")
                    raise
                if self.telemetry is not None:
                    self.telemetry.committed(time.perf_counter() - t0)
                self._checkpoints_committed += 1
                self._committed(item.checkpoint)
            if span is not None:
                span.end()
                interval = item.links[2]  # type: ignore[index]
                if interval is not None and self.trace is not None:
                    self.trace.interval_ended(interval)
            if item.checkpoint is not None or not self.sink.transactional:
                now = time.perf_counter()
                for ingest in pending:
                    self.metrics.latency.record((now - ingest) * 1000)
                    if self.telemetry is not None:
                        self.telemetry.latency(now - ingest)
                pending.clear()
            if item.checkpoint is not None and self.on_commit is not None:
                self.on_commit(item.checkpoint, self.metrics)

    def _committed(self, checkpoint: Checkpoint) -> None:
        """Tell sources that want it (``on_commit``) which offsets are now durable in the
        sink, e.g. so a log source can show its consumer group's lag."""
        for node in self.p.sources():
            hook = getattr(node.source, "on_commit", None)
            if hook is not None:
                prefix = f"{node.source.name}/"
                hook(
                    {
                        k[len(prefix) :]: v
                        for k, v in checkpoint.offsets.items()
                        if k.startswith(prefix)
                    }
                )

    # -- processing ----------------------------------------------------------------------
    def _process(self) -> bool:
        ingests: list[float] = []
        self.last_checkpoint = self.checkpoint()
        while True:
            waited = time.perf_counter()
            try:
                item = self.source_q.get(timeout=0.1)
            except queue.Empty:
                self.metrics.idle_s += time.perf_counter() - waited
                if self.errors:
                    raise EngineError("stopping after an error") from self.errors[0]
                if self.p.idle_timeout_ms is not None:
                    # No input: partitions may have turned idle, letting the watermark on.
                    self._advance()
                    self._flush([], checkpoint=self._checkpoint_due_by_time())
                elif self._checkpoint_due_by_time():
                    self._flush([], checkpoint=True)
                continue
            self.metrics.idle_s += time.perf_counter() - waited
            if item is _END:
                break
            if isinstance(item, _Finished):
                self.tracker.finish(item.key)
                self._advance()
            elif item.table.num_rows == 0:
                # A non-dense source skipped offsets that hold no rows (next_offset).
                self.offsets[item.key] = item.end
                continue
            else:
                self._batch(item)
                ingests.append(item.ingest)
            self.batches_since_checkpoint += 1
            due = (
                self.batches_since_checkpoint >= self.cfg.checkpoint_every
                or self._checkpoint_due_by_time()
            )
            self._flush(ingests, checkpoint=due)
            ingests = []
        finished = self.mode == "bounded" and all(
            self.source_ends[k] is not None and self.offsets[k] >= self.source_ends[k]
            for k in self.offsets
        )
        if finished:
            self.tracker.finished.update(self.offsets)
            self._advance()
        self._flush(ingests, checkpoint=True, final=True)
        return finished

    def _checkpoint_due_by_time(self) -> bool:
        interval = self.cfg.checkpoint_interval_s
        return (
            interval is not None
            and self.batches_since_checkpoint > 0
            and time.monotonic() - self.checkpointed_at >= interval
        )

    def _flush(self, ingests: list[float], checkpoint: bool, final: bool = False) -> None:
        if checkpoint and not final and self._failed_in_a_row:
            # Batches rejected in a row are committed once a batch goes through (or the
            # run ends): if the breaker trips, the last checkpoint is before the streak,
            # so a restart meets the same streak and stops again with the same reason
            # rather than dead-lettering a little more at each restart.
            checkpoint = False
        if checkpoint and not final and self._checkpoints_committed < self._checkpoints_taken:
            # One checkpoint in flight at a time (Flink's max-concurrent-checkpoints = 1):
            # a checkpoint falling due while the sink still commits the last one waits
            # until it has, and the batches in between go into the next. Each checkpoint
            # is a copy of the state, snapshotted on this thread: with checkpoints due
            # more often than a slow sink commits them (a small ``checkpoint_every``, or
            # by time), they queued behind the sink, each paid for and held. q19 with a
            # 60 s TTL, a DuckDB sink and a checkpoint every 2 batches: 778 s -> 280 s.
            # (With the default 50 batches the sink queue already held the batches back
            # behind a slow commit: nothing is deferred there.)
            checkpoint = False
            if not self._checkpoint_deferred:  # once per checkpoint, not per batch or poll
                self._checkpoint_deferred = True
                self.metrics.checkpoints_deferred += 1
        output = None
        if self._outputs:
            output = pl.concat(self._outputs, how="vertical_relaxed")
            self.metrics.events_out += output.height
        side = pl.concat(self._sides) if self._sides else None
        self._outputs, self._sides = [], []
        cp = None
        # Only a transactional sink stores checkpoints; for the others a snapshot would
        # be work thrown away (the final one is still taken for the run's result).
        if checkpoint:
            self.batches_since_checkpoint = 0
            self.checkpointed_at = time.monotonic()
        if checkpoint and (self.sink.transactional or final):
            t0 = time.perf_counter()
            try:
                cp = self.checkpoint()
            except BaseException:
                if self.telemetry is not None:
                    self.telemetry.checkpoint_failed("snapshot")
                raise
            if self.telemetry is not None:
                self.telemetry.checkpointed(cp, time.perf_counter() - t0)
            self.metrics.checkpoints += 1
            self._checkpoints_taken += 1
            self._checkpoint_deferred = False
            self.last_checkpoint = cp
        if output is not None or side is not None or cp is not None or ingests:
            links = None
            if self.trace is not None and output is not None:
                self.trace.rows += output.height
            if self.trace is not None and (cp is not None or not self.sink.transactional):
                # One span per commit (per write for a sink without transactions), linked
                # to every batch it makes durable.
                links = self.trace.take_links(cp is not None)
            self._put(self.sink_q, _SinkItem(output, side, ingests, cp, links), sink=True)
        if self.listener is not None:
            self._state_rows()
            self._own_stats()
            self.listener(self.metrics)
        if self.telemetry is not None:
            self._export()
        self.drops.observe(self._drop_totals())

    def _export(self, force: bool = False) -> None:
        """Hand the counters to the exporters (rate-limited by the telemetry itself)."""
        telemetry = self.telemetry
        if telemetry is None or (not force and time.monotonic() < telemetry._next):
            return
        self._own_stats()  # plugins' calls, rows, errors
        telemetry.flush(
            self.metrics,
            self.offsets,
            self.source_ends,
            {n.id: n.operator.state_rows() for n in self.p.operators()},
            force=force,
        )

    def _state_rows(self) -> None:
        for node in self.p.operators():
            self.metrics.operators[node.id].state_rows = node.operator.state_rows()

    def _own_stats(self) -> None:
        for node in self.p.operators():
            base = self._own_base.get(node.id, {})
            own = node.operator.stats()
            if own:
                self.metrics.operators[node.id].own = {
                    k: v - base.get(k, 0) for k, v in own.items()
                }

    def _batch(self, item: _SourceBatch) -> None:
        self._rejections = 0
        trace = self.trace
        self._in_batch = True
        try:
            if trace is None:
                self._process_batch(item)
            else:
                dead = self.metrics.dead_letters
                trace.batch_started(item.key, item.start, item.end, item.table.num_rows)
                try:
                    self._process_batch(item)
                except BaseException as err:
                    trace.batch_ended(self.metrics.dead_letters - dead, err)
                    raise
                trace.batch_ended(self.metrics.dead_letters - dead)
        finally:
            self._in_batch = False
        if not self._rejections:
            self._failed_in_a_row = 0
            return
        self._failed_in_a_row += 1
        if self._failed_in_a_row >= self.cfg.max_failed_batches:
            step, reason = self._last_rejection
            raise PipelineHaltedError(
                f"pipeline {self.p.name!r} stopped: step {step} rejected"
                f" {self._failed_in_a_row} batches in a row (last: {reason}); fix the step"
                " or its input and run again (the run resumes from its last checkpoint)"
            )

    def _process_batch(self, item: _SourceBatch) -> None:
        node = self.p.nodes[item.node]
        source = node.source
        time_col = source.time_column
        self.metrics.batches += 1
        self.metrics.events_in += item.table.num_rows
        parts = self.metrics.partition_in
        parts[item.key] = parts.get(item.key, 0) + item.table.num_rows
        if item.newest is not None:
            self.metrics.emit_event_ms = item.newest
        good, dead = self._validate(item, source.schema, time_col)
        self.offsets[item.key] = item.end
        if dead is not None:
            self.metrics.dead_letters += dead.height
            self._dead_reasons(dead)
            self._sides.append(dead)
        if good is None or good.height == 0:
            return
        saved = self._savepoint()
        try:
            self._feed(item, good, time_col, clean=dead is None)
        except _StepFailedError as failed:
            self._roll_back(saved, good, failed)

    def _feed(self, item: _SourceBatch, good: pl.DataFrame, time_col: str, clean: bool) -> None:
        """The accepted rows of a source batch through the operator graph."""
        if not self.row_watermarks:
            # The source thread already found the newest event time, unless rows were
            # rejected (then it may be one of them).
            newest = item.newest if clean and item.newest is not None else None
            if newest is None:
                newest = int(good.get_column(time_col).cast(pl.Int64).max())
            self.tracker.observe(item.key, newest)
            self._emit(item.node, good)
            self._advance()
            return
        times = good.get_column(time_col).cast(pl.Int64).to_numpy()
        # Row-level watermark: what the watermark was just before each row arrived.
        prev = self.tracker.max_seen.get(item.key, MIN_WATERMARK)
        newest = _none_behind(times, prev, self.p.out_of_orderness_ms, self.tracker.emitted)
        if newest is not None:
            # Nothing is behind its watermark (the common case, decided without the
            # per-row watermark): as below, the column is left off.
            self.tracker.observe(item.key, newest)
            self._emit(item.node, good)
            self._advance()
            return
        before = np.maximum.accumulate(np.concatenate(([prev], times[:-1])))
        own = np.where(before == MIN_WATERMARK, MIN_WATERMARK, before - self.p.out_of_orderness_ms)
        row_wm = np.maximum(np.minimum(own, self.tracker.others(item.key)), self.tracker.emitted)
        self.tracker.observe(item.key, int(times.max()))
        if (times >= row_wm).all():
            # Nothing is behind its watermark, so nothing can be late for any allowed
            # lateness (>= 0): the column is left off and operators skip the check.
            self._emit(item.node, good)
        else:
            self._emit(item.node, good.with_columns(pl.Series(WM_COL, row_wm)))
        self._advance()

    def _savepoint(self) -> _Savepoint:
        """What to go back to if a stateful step fails on this batch. Cheap: operators
        hand back references to their (immutable) state frames where they can."""
        m, t = self.metrics, self.tracker
        return _Savepoint(
            states={n.id: n.operator.savepoint() for n in self._stateful},
            max_seen=dict(t.max_seen),
            finished=set(t.finished),
            last_active=dict(t.last_active),
            emitted=t.emitted,
            outputs=len(self._outputs),
            sides=len(self._sides),
            late_events=m.late_events,
            dead_letters=m.dead_letters,
            dead_by_reason=dict(m.dead_by_reason),
            operators={k: replace(v) for k, v in m.operators.items()},
            watermark=(m.watermark_ms, m.watermark_lag_ms),
        )

    def _roll_back(self, saved: _Savepoint, good: pl.DataFrame, failed: _StepFailedError) -> None:
        """A stateful step failed on this batch: every operator's state, the watermark,
        the outputs and the counters go back to before the batch, and the batch's rows
        are dead-lettered whole with the step and the reason. No state counts any of
        it, so a redrive of the dead letters counts each row once."""
        for node in self._stateful:
            node.operator.rollback(saved.states[node.id])
        t, m = self.tracker, self.metrics
        t.max_seen, t.finished, t.last_active = saved.max_seen, saved.finished, saved.last_active
        t.emitted = saved.emitted
        del self._outputs[saved.outputs :]
        del self._sides[saved.sides :]
        m.late_events, m.dead_letters = saved.late_events, saved.dead_letters
        m.dead_by_reason = saved.dead_by_reason
        for node_id, stats in saved.operators.items():
            own = m.operators[node_id].own  # the operator's own counters are cumulative
            m.operators[node_id] = replace(stats, own=own)
        m.watermark_ms, m.watermark_lag_ms = saved.watermark
        reason = (
            f"step {failed.node_id}: {failed.reason}"
            " (the batch was rolled back: no step's state counts it)"
        )
        stats = m.operators[failed.node_id]
        stats.errors += 1
        m.dead_letters += good.height
        m.dead_by_reason[failed.kind] = m.dead_by_reason.get(failed.kind, 0) + good.height
        self._sides.append(side_rows(good, "dead_letter", failed.node_id, reason))
        self._rejections += 1
        self._last_rejection = (failed.node_id, failed.reason)

    def _dead_reasons(self, dead: pl.DataFrame) -> None:
        """Count dead letters by reason kind (bounded label values, not the free text)."""
        reasons = self.metrics.dead_by_reason
        for reason, n in dead.group_by("reason").len().iter_rows():
            kind = (
                "schema_mismatch"
                if reason.startswith("schema mismatch")
                else "null_event_time"
                if reason.startswith("null event time")
                else "future_event_time"
                if "ahead of the stream" in reason
                else "other"
            )
            reasons[kind] = reasons.get(kind, 0) + n

    def _validate(self, item: _SourceBatch, schema: pa.Schema, time_col: str):
        """Split a source batch into rows the pipeline can take and dead letters."""
        table = item.table
        where = f"{item.key}@{item.start}"
        seen = self.tracker.max_seen.get(item.key, MIN_WATERMARK)
        if (  # Fast path: no nulls and nothing too far ahead means nothing to reject.
            item.frame is not None
            and table.column(time_col).null_count == 0
            and seen != MIN_WATERMARK
            and item.newest <= seen + self.p.max_future_ms
        ):
            return item.frame, None
        missing = [f.name for f in schema if f.name not in table.column_names]
        wrong = [
            f"{f.name}: {table.schema.field(f.name).type} (expected {f.type})"
            for f in schema
            if f.name not in missing and not table.schema.field(f.name).type.equals(f.type)
        ]
        if missing or wrong:
            reason = "schema mismatch: " + "; ".join(
                ([f"missing columns {missing}"] if missing else []) + wrong
            )
            return None, side_rows(pl.from_arrow(table), "dead_letter", where, reason)
        df = item.frame if item.frame is not None else pl.from_arrow(table.select(schema.names))
        null_time = pl.col(time_col).is_null()
        future = pl.Series(self._jumps_ahead(df.get_column(time_col), seen))
        bad = df.filter(null_time | future)
        if bad.height == 0:
            return df, None
        parts = []
        nulls = bad.filter(null_time)
        if nulls.height:
            parts.append(side_rows(nulls, "dead_letter", where, f"null event time ({time_col})"))
        far = bad.filter(~null_time)
        if far.height:
            parts.append(
                side_rows(
                    far,
                    "dead_letter",
                    where,
                    f"event time more than {self.p.max_future_ms} ms ahead of the stream",
                )
            )
        return df.filter(~(null_time | future)), pl.concat(parts)

    def _jumps_ahead(self, times: pl.Series, seen: int) -> np.ndarray:
        """Rows more than ``max_future_ms`` ahead of everything before them in the
        stream: a jump, not progress. Judged against the running maximum of the
        preceding accepted rows, so a sparse stream whose batch spans many hours is
        fine while one clock-skewed row is not. A second pass leaves the rows found
        by the first out of the running maximum (an outlier must not hide the next)."""
        t = times.cast(pl.Int64).fill_null(MIN_WATERMARK).to_numpy()
        valid = t != MIN_WATERMARK
        if not valid.any():
            return np.zeros(len(t), dtype=bool)
        start = seen if seen != MIN_WATERMARK else int(np.median(t[valid]))
        limit = self.p.max_future_ms
        flagged = np.zeros(len(t), dtype=bool)
        for _ in range(2):
            base = np.where(flagged, MIN_WATERMARK, t)
            before = np.maximum.accumulate(np.concatenate(([start], base[:-1])))
            flagged = valid & (t > before + limit)
        return flagged

    def _emit(self, node_id: str, df: pl.DataFrame) -> None:
        if node_id == self.p.sink_node:
            self._outputs.append(df.drop(WM_COL) if WM_COL in df.columns else df)
        for child, port in self.p.children[node_id]:
            self._push(child, port, df)

    def _push(self, node_id: str, port: int, df: pl.DataFrame) -> None:
        op = self.p.nodes[node_id].operator
        stats = self.metrics.operators[node_id]
        t0, cpu0 = time.perf_counter(), time.thread_time()
        trace = self.trace
        try:
            if trace is not None and node_id in trace.plugins:
                with trace.plugin_call(node_id, df.height):
                    out, late = op.process(df, port)
            else:
                out, late = op.process(df, port)
        except BatchRejectedError as err:
            # Contained failure of this batch only (e.g. a plugin trap or timeout): the
            # rows are kept as dead letters with the reason, and the pipeline goes on.
            if op.stateful:
                self._stateful_failure(node_id, str(err), "batch_rejected", t0)
            self._reject(node_id, df, str(err), t0, kind="batch_rejected")
            return
        except _POLARS_FAILURES as err:
            reason = f"{op.name} failed: {polars_reason(err)}"
            if op.stateful:
                # Its state (and every stateful step before it) may hold part of the
                # batch: the whole source batch is rolled back and dead-lettered.
                self._stateful_failure(node_id, reason, "step_failed", t0)
            # A stateless step (an expression failing on this batch's values or
            # columns): the batch is dead-lettered with the reason and the run goes on;
            # its offsets are already past it, so a restart does not meet it again.
            self._reject(node_id, df, reason, t0, kind="expression_failed")
            return
        stats.seconds += time.perf_counter() - t0
        stats.process_cpu.record((time.thread_time() - cpu0) * 1000)
        stats.rows_in += df.height
        if late is not None and late.height:
            stats.late += late.height
            self.metrics.late_events += late.height
            self._sides.append(
                side_rows(late, "late", node_id, "event time behind watermark - allowed lateness")
            )
        if out is not None and out.height:
            stats.rows_out += out.height
            self._emit(node_id, out)

    def _stateful_failure(self, node_id: str, reason: str, kind: str, t0: float) -> None:
        """A stateful step failed: inside a source batch the batch is rolled back
        (``_StepFailedError``, caught in ``_process_batch``); outside one (the watermark
        moved on idleness or at the end of the input) there is no batch to dead-letter,
        so the run stops naming the step; its last checkpoint is before the failure."""
        self.metrics.operators[node_id].seconds += time.perf_counter() - t0
        if self._in_batch:
            raise _StepFailedError(node_id, reason, kind)
        raise EngineError(f"step {node_id}: {reason}")

    def _reject(self, node_id: str, df: pl.DataFrame, reason: str, t0: float, *, kind: str) -> None:
        """Dead-letter a whole batch at `node_id`; `kind` is the metric's reason label
        (bounded set: `batch_rejected`, `expression_failed`), `reason` the full text."""
        stats = self.metrics.operators[node_id]
        stats.seconds += time.perf_counter() - t0
        stats.rows_in += df.height
        stats.errors += 1
        self.metrics.dead_letters += df.height
        reasons = self.metrics.dead_by_reason
        reasons[kind] = reasons.get(kind, 0) + df.height
        self._sides.append(side_rows(df, "dead_letter", node_id, reason))
        self._rejections += 1
        self._last_rejection = (node_id, reason)

    def _advance(self) -> None:
        watermark = self.tracker.current()
        self.metrics.watermark_ms = watermark if MIN_WATERMARK < watermark < MAX_WATERMARK else None
        self.metrics.watermark_lag_ms = (
            None if self.metrics.watermark_ms is None else now_ms() - watermark
        )
        for node in self.p.operators():
            t0, cpu0 = time.perf_counter(), time.thread_time()
            try:
                out = node.operator.advance(watermark)
            except _POLARS_FAILURES as err:
                reason = f"{node.operator.name} failed: {polars_reason(err)}"
                self._stateful_failure(node.id, reason, "step_failed", t0)
            stats = self.metrics.operators[node.id]
            stats.seconds += time.perf_counter() - t0
            stats.advance_cpu.record((time.thread_time() - cpu0) * 1000)
            if out is not None and out.height:
                stats.rows_out += out.height
                self._emit(node.id, out)
