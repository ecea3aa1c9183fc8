"""Continuous runs of declarative pipelines: poll the sources until told to stop, commit a
checkpoint with the output every so often, and resume from the last one on the next run.

``run_continuous`` blocks; ``ContinuousRun`` runs it on a thread and hands each committed
checkpoint to the caller's thread (what a long-running Dagster op reports as asset
events; no Dagster here).
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dataflare_platform.engine.checkpoint import Checkpoint
from dataflare_platform.engine.io import Sink
from dataflare_platform.engine.metrics import EngineMetrics
from dataflare_platform.engine.pipeline import Pipeline
from dataflare_platform.engine.runner import Runner, RunnerConfig, RunResult
from dataflare_platform.events.log import EventLog
from dataflare_platform.streams import bind
from dataflare_platform.streams.progress import DEFAULT_RATE_WINDOW_S, RateWindow, partition_lag
from dataflare_platform.streams.ranges import source_ends
from dataflare_platform.streams.spec import PipelineSpec

DEFAULT_CHECKPOINT_INTERVAL_S = 2.0


@dataclass(frozen=True)
class CheckpointReport:
    """What one committed checkpoint says about the pipeline (all numbers)."""

    events_in: int  # since this run started
    events_out: int
    dead_lettered: int
    late_events: int
    events_in_total: int  # since the pipeline first ran (restored from checkpoints)
    events_per_s: float  # now: over the last rate window (``progress.RateWindow``)
    events_per_s_lifetime: float  # this run's average
    p99_batch_ms: float
    watermark_ms: int
    lag_events: int  # committed topic events not yet covered by the checkpoint
    checkpoints: int
    checkpoint_at: float  # when it was committed, seconds since the epoch
    offsets: dict[str, int]
    lag_by_partition: dict[str, int] = field(default_factory=dict)
    # This run's seconds so far (FLIP-33's busy / idle / backpressured time, cumulative:
    # the autoscaler diffs two reports, streams.autoscaling.measure): the operators at
    # work, the operator thread waiting for input, and waiting for a full sink queue.
    busy_s: float = 0.0
    idle_s: float = 0.0
    backpressured_s: float = 0.0
    # Per source with a ``report()`` (a landing directory: files, dead letters,
    # quarantined file names), as of this checkpoint.
    sources: dict[str, dict[str, object]] = field(default_factory=dict)
    # The committed checkpoint itself (offsets and processed event times), for the lag in
    # events and seconds; not a metadata value.
    checkpoint: Checkpoint | None = field(default=None, repr=False, compare=False)
    # The run's live counters (the engine's own object, updated on its operator thread):
    # whether it has read anything since this checkpoint (``read_since``); not a value.
    live: EngineMetrics | None = field(default=None, repr=False, compare=False)

    def metadata(self) -> dict[str, object]:
        values = dict(self.__dict__)
        values.pop("checkpoint")
        values.pop("live")
        return values

    def read_since(self) -> int | None:
        """Events the run has read since this checkpoint (None: no live counters). Zero
        means the counters here are still the run's now, not only as of the commit."""
        if self.live is None:
            return None
        return self.live.events_in - self.live.resumed.get("events_in", 0) - self.events_in


def report(
    checkpoint: Checkpoint,
    metrics: EngineMetrics,
    ends: dict[str, int],
    seconds: float,
    current_rate: float | None = None,
    committed_at: float | None = None,
    sources: dict[str, dict[str, object]] | None = None,
) -> CheckpointReport:
    """The report of a committed ``checkpoint``: ``seconds`` since the run started (for
    the lifetime rate), ``current_rate`` the windowed one (the lifetime rate if none)."""
    counters = checkpoint.counters
    base = metrics.resumed
    events_in = counters.get("events_in", 0) - base.get("events_in", 0)
    lifetime = round(events_in / seconds, 1) if seconds > 0 else 0.0
    lag = partition_lag(checkpoint.offsets, ends)
    return CheckpointReport(
        events_in=events_in,
        events_out=counters.get("events_out", 0) - base.get("events_out", 0),
        dead_lettered=counters.get("dead_letters", 0) - base.get("dead_letters", 0),
        late_events=counters.get("late_events", 0) - base.get("late_events", 0),
        events_in_total=counters.get("events_in", 0),
        events_per_s=lifetime if current_rate is None else round(current_rate, 1),
        events_per_s_lifetime=lifetime,
        p99_batch_ms=metrics.latency.summary()["p99_ms"] or 0.0,
        watermark_ms=metrics.watermark_ms or 0,
        lag_events=sum(lag.values()),
        checkpoints=counters.get("checkpoints", 0),
        checkpoint_at=time.time() if committed_at is None else committed_at,
        offsets=dict(checkpoint.offsets),
        lag_by_partition=lag,
        busy_s=round(sum(op.seconds for op in metrics.operators.values()), 6),
        idle_s=round(metrics.idle_s, 6),
        backpressured_s=round(metrics.sink_blocked_s, 6),
        sources=sources or {},
        checkpoint=checkpoint,
        live=metrics,
    )


def run_continuous(
    spec: PipelineSpec,
    log: EventLog,
    default_dir: Path,
    stop: threading.Event,
    on_checkpoint: Callable[[CheckpointReport], None] | None = None,
    plugins: dict | None = None,
    config: RunnerConfig | None = None,
    rate_window_s: float = DEFAULT_RATE_WINDOW_S,
    partitions: tuple[int, ...] | None = None,
    checkpoint_key: str | None = None,
    sink: Sink | None = None,
) -> RunResult:
    """Process the pipeline's topics as events arrive until ``stop`` is set; then finish
    the batch in flight, commit a last checkpoint and return. Starts from the checkpoint
    the sink committed last, so a stopped (or crashed) run's successor reads no event
    twice. ``on_checkpoint`` gets a report after each commit, on the engine's sink
    thread; its ``events_per_s`` is the rate over the last ``rate_window_s`` seconds.
    ``partitions`` / ``checkpoint_key``: a partition-parallel worker's unit (only those
    source partitions, under its own checkpoint; ``streams.workers``). ``sink`` replaces
    the declared sink (benchmarks).
    """
    config = config or RunnerConfig(checkpoint_interval_s=DEFAULT_CHECKPOINT_INTERVAL_S)
    pipeline = bind.build(
        spec,
        log=log,
        default_dir=default_dir,
        plugins=plugins,
        partitions=partitions,
        checkpoint_key=checkpoint_key,
        sink=sink,
    )
    owned = pipeline.partition_keys()
    started = time.monotonic()
    rates = RateWindow(rate_window_s)
    rates.add(started, 0)

    def committed(checkpoint: Checkpoint, metrics: EngineMetrics) -> None:
        if on_checkpoint is not None:
            now = time.monotonic()
            events_in = checkpoint.counters.get("events_in", 0)
            rates.add(now, events_in - metrics.resumed.get("events_in", 0))
            ends = {k: v for k, v in source_ends(spec, log).items() if k in owned}
            on_checkpoint(
                report(
                    checkpoint,
                    metrics,
                    ends,
                    now - started,
                    rates.rate(now),
                    sources=source_reports(pipeline),
                )
            )

    runner = Runner(pipeline, config, on_commit=committed)
    try:
        return runner.run(mode="continuous", stop=stop)
    finally:
        bind.close_sources(pipeline)


def source_reports(pipeline: Pipeline) -> dict[str, dict[str, object]]:
    """``report()`` of each source that has one (landing directories), by name."""
    out: dict[str, dict[str, object]] = {}
    for node in pipeline.nodes.values():
        hook = getattr(node.source, "report", None)
        if node.source is not None and callable(hook):
            out[node.source.name] = hook()
    return out


class ContinuousRun:
    """``run_continuous`` on a thread; ``reports()`` yields each checkpoint's report on the
    caller's thread until the run ends (re-raising the engine's error, if any)."""

    def __init__(
        self,
        spec: PipelineSpec,
        log: EventLog,
        default_dir: Path,
        plugins: dict | None = None,
        config: RunnerConfig | None = None,
        rate_window_s: float = DEFAULT_RATE_WINDOW_S,
        partitions: tuple[int, ...] | None = None,
        checkpoint_key: str | None = None,
        sink: Sink | None = None,
    ) -> None:
        self.stop_event = threading.Event()
        self._reports: queue.Queue[CheckpointReport] = queue.Queue()
        self._error: BaseException | None = None
        self.result: RunResult | None = None

        def work() -> None:
            try:
                self.result = run_continuous(
                    spec,
                    log,
                    default_dir,
                    self.stop_event,
                    self._reports.put,
                    plugins,
                    config,
                    rate_window_s,
                    partitions,
                    checkpoint_key,
                    sink,
                )
            except BaseException as err:
                self._error = err

        # The engine runs in the caller's context (a copy): its run span is the child of
        # the span current here (the Dagster step's), and its log lines carry the step's
        # run id, job and step (observability/logs.py reads Dagster's context variable).
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(work,), name=f"df-continuous-{spec.name}"
        )

    def start(self) -> ContinuousRun:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        """What ended the run, once it has ended with an error."""
        return self._error

    def reports(self, poll_s: float = 0.2) -> Iterator[CheckpointReport]:
        """Reports as they come, until the run has ended and all were handed out; then
        raises the run's error, if it failed."""
        for item in self.reports_or_idle(poll_s):
            if item is not None:
                yield item

    def reports_or_idle(self, poll_s: float = 0.2) -> Iterator[CheckpointReport | None]:
        """As ``reports``, with a None each ``poll_s`` that brought no report, so the
        caller can act on time (record progress that is due) while the stream is idle."""
        while True:
            alive = self._thread.is_alive()
            try:
                item = self._reports.get(timeout=poll_s)
            except queue.Empty:
                if alive:
                    yield None
                    continue
                break
            yield item
        if self._error is not None:
            raise self._error

    def stop(self, timeout_s: float | None = None) -> bool:
        """Ask the run to finish its batch and checkpoint; wait for it up to ``timeout_s``.
        True when it has ended."""
        self.stop_event.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()
