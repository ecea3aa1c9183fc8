"""The runner's metrics, exported: per flush (a batch or a checkpoint), never per row.

The runner already keeps cumulative counters (``EngineMetrics``); this turns their
increase since the last export into counter increments and sets the gauges, at most every
``interval_s`` (counters are exact whatever the interval: the increase accumulates) and
once more when the run ends. Latencies, checkpoint durations and sink commits are
recorded as they happen (one sample per batch or commit). Names and their Flink
(FLIP-33) / Kafka equivalents: ``observability.catalog`` and docs/observability.md.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from dataflare_platform.observability import Instruments
from dataflare_platform.observability.catalog import PLUGIN_STATS
from dataflare_platform.times import now_ms

if TYPE_CHECKING:
    from dataflare_platform.engine.checkpoint import Checkpoint
    from dataflare_platform.engine.io import Source
    from dataflare_platform.engine.metrics import EngineMetrics


class EngineTelemetry:
    """Exports one run's metrics under ``pipeline=<name>``."""

    def __init__(
        self,
        instruments: Instruments,
        pipeline: str,
        metrics: EngineMetrics,
        sources: Mapping[str, tuple[Source, str]],
        interval_s: float = 0.25,
    ) -> None:
        self.i = instruments
        self.metrics = metrics  # telemetry_s: the time spent here, for the bench
        self.p = (pipeline,)
        self.sources = dict(sources)
        self.interval_s = interval_s
        # The first export waits one interval: a short run pays only the final one.
        self._next = time.monotonic() + interval_s
        self._last: dict[tuple, float] = {}
        self._latencies: list[float] = []  # sink thread only, until the run's end
        self._latencies_due = self._next
        self._baseline(metrics)
        names = (
            "dataflare_engine_records_in_total",
            "dataflare_engine_records_out_total",
            "dataflare_engine_batches_total",
            "dataflare_source_records_in_total",
            "dataflare_source_records_lag",
            "dataflare_operator_records_in_total",
            "dataflare_operator_records_out_total",
            "dataflare_operator_state_rows",
            "dataflare_engine_late_records_total",
            "dataflare_engine_dead_letters_total",
            "dataflare_engine_watermark_lag_seconds",
            "dataflare_engine_emit_event_time_lag_seconds",
            "dataflare_engine_latency_seconds",
            "dataflare_engine_busy_seconds_total",
            "dataflare_engine_idle_seconds_total",
            "dataflare_engine_backpressured_seconds_total",
            "dataflare_engine_checkpoints_total",
            "dataflare_engine_checkpoint_failures_total",
            "dataflare_engine_checkpoint_duration_seconds",
            "dataflare_engine_checkpoint_state_bytes",
            "dataflare_sink_commit_seconds",
            *PLUGIN_STATS.values(),
        )
        self.m = {n: instruments[n] for n in names}

    def _counters(self, m: EngineMetrics) -> dict[tuple, float]:
        values: dict[tuple, float] = {
            ("dataflare_engine_records_in_total", self.p): m.events_in,
            ("dataflare_engine_records_out_total", self.p): m.events_out,
            ("dataflare_engine_batches_total", self.p): m.batches,
            ("dataflare_engine_checkpoints_total", self.p): m.checkpoints,
            ("dataflare_engine_idle_seconds_total", self.p): m.idle_s,
            ("dataflare_engine_backpressured_seconds_total", (*self.p, "source")): (
                m.source_blocked_s
            ),
            ("dataflare_engine_backpressured_seconds_total", (*self.p, "operators")): (
                m.sink_blocked_s
            ),
        }
        busy = 0.0
        for name, op in m.operators.items():
            labels = (*self.p, name)
            values[("dataflare_operator_records_in_total", labels)] = op.rows_in
            values[("dataflare_operator_records_out_total", labels)] = op.rows_out
            values[("dataflare_engine_late_records_total", labels)] = op.late
            for stat, metric in PLUGIN_STATS.items():
                if stat in op.own:
                    values[(metric, labels)] = op.own[stat]
            busy += op.seconds
        values[("dataflare_engine_busy_seconds_total", self.p)] = busy
        for key, n in m.partition_in.items():
            source, _, partition = key.partition("/")
            values[("dataflare_source_records_in_total", (*self.p, source, partition))] = n
        for reason, n in m.dead_by_reason.items():
            values[("dataflare_engine_dead_letters_total", (*self.p, reason))] = n
        return values

    def _baseline(self, m: EngineMetrics) -> None:
        """Counters restored from a checkpoint were exported by the run that made them."""
        self._last = self._counters(m)

    def flush(
        self,
        m: EngineMetrics,
        offsets: Mapping[str, int],
        ends: Mapping[str, int | None],
        state_rows: Mapping[str, int] | None = None,
        force: bool = False,
    ) -> None:
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + self.interval_s
        t0 = time.perf_counter()
        self._flush(m, offsets, ends, state_rows)
        self.metrics.telemetry_s += time.perf_counter() - t0

    def _flush(
        self,
        m: EngineMetrics,
        offsets: Mapping[str, int],
        ends: Mapping[str, int | None],
        state_rows: Mapping[str, int] | None,
    ) -> None:
        for key, value in self._counters(m).items():
            delta = value - self._last.get(key, 0)
            if delta > 0:
                self.m[key[0]].record(delta, key[1])
                self._last[key] = value
        if m.watermark_lag_ms is not None:
            self.m["dataflare_engine_watermark_lag_seconds"].record(
                m.watermark_lag_ms / 1000, self.p
            )
        if m.emit_event_ms is not None:
            self.m["dataflare_engine_emit_event_time_lag_seconds"].record(
                (now_ms() - m.emit_event_ms) / 1000, self.p
            )
        for name, rows in (state_rows or {}).items():
            self.m["dataflare_operator_state_rows"].record(rows, (*self.p, name))
        lag = self.m["dataflare_source_records_lag"]
        for key, offset in offsets.items():
            end = ends.get(key)
            if end is None and key in self.sources:
                # Open-ended (continuous): a source that knows where its data ends now
                # says so (``latest_offset``, optional); else ``end_offset`` if it has one.
                source, partition = self.sources[key]
                latest = getattr(source, "latest_offset", None)
                end = latest(partition) if latest is not None else source.end_offset(partition)
            if end is not None:
                source_name, _, partition = key.partition("/")
                lag.record(max(end - offset, 0), (*self.p, source_name, partition))

    def latency(self, seconds: float) -> None:
        """One batch's latency (sink thread): buffered, handed over in bulk per interval
        (one ``observe`` per batch cost ~4 % of q1's throughput)."""
        self._latencies.append(seconds)
        now = time.monotonic()
        if now >= self._latencies_due:
            self._latencies_due = now + self.interval_s
            self.flush_latencies()

    def flush_latencies(self) -> None:
        """Called from the sink thread, and at the run's end once that thread is done."""
        t0 = time.perf_counter()
        pending, self._latencies = self._latencies, []
        self.m["dataflare_engine_latency_seconds"].record_many(pending, self.p)
        self.metrics.telemetry_s += time.perf_counter() - t0

    def checkpointed(self, checkpoint: Checkpoint, seconds: float) -> None:
        t0 = time.perf_counter()
        self.m["dataflare_engine_checkpoint_duration_seconds"].record(seconds, self.p)
        size = sum(t.nbytes for tables in checkpoint.states.values() for t in tables.values())
        self.m["dataflare_engine_checkpoint_state_bytes"].record(size, self.p)
        self.metrics.telemetry_s += time.perf_counter() - t0

    def checkpoint_failed(self, phase: str) -> None:
        """Counted at once (not at the next flush): the run is about to stop."""
        self.m["dataflare_engine_checkpoint_failures_total"].record(1, (*self.p, phase))

    def committed(self, seconds: float) -> None:
        t0 = time.perf_counter()
        self.m["dataflare_sink_commit_seconds"].record(seconds, self.p)
        self.metrics.telemetry_s += time.perf_counter() - t0
