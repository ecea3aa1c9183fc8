"""Engine metrics: counters, a batch-latency histogram and a listener hook.

The hook is a plain callable so the control plane (Dagster metadata) or an
OpenTelemetry exporter can subscribe without the engine depending on either.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dataflare_platform.errors import InvalidInputError


@dataclass
class OperatorMetrics:
    rows_in: int = 0
    rows_out: int = 0
    late: int = 0
    seconds: float = 0.0
    state_rows: int = 0
    errors: int = 0  # batches rejected (dead-lettered whole)
    # Counters an operator keeps itself (a plugin's calls, rows, seconds in WASM, errors),
    # for this run: see ``Operator.stats``.
    own: dict[str, float] = field(default_factory=dict)
    # This thread's CPU per call of ``process`` and of ``advance`` (ms): what a step costs
    # whatever else the machine runs (wall time under load measures the load too).
    process_cpu: LatencyHistogram = field(default_factory=lambda: LatencyHistogram())
    advance_cpu: LatencyHistogram = field(default_factory=lambda: LatencyHistogram())

    def cpu_summary(self) -> dict[str, dict[str, float]]:
        """p50/p99/max ms and the total seconds of thread CPU per call kind."""
        return {
            name: {**h.summary(), "total_s": round(h.total_ms / 1000, 4), "calls": h.count}
            for name, h in (("process", self.process_cpu), ("advance", self.advance_cpu))
            if h.count
        }

    def as_dict(self) -> dict[str, object]:
        """Flat: the engine's counters, then the operator's own prefixed by its kind."""
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "late": self.late,
            "seconds": round(self.seconds, 4),
            "state_rows": self.state_rows,
            "errors": self.errors,
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in self.own.items()},
        }


# Warm-up batches a summary may leave out (``summary(skip=...)``): their raw samples are
# kept, so they can be taken back out of the buckets.
HEAD_SAMPLES = 64


@dataclass
class LatencyHistogram:
    """Batch latencies in ms, in fixed log-spaced buckets: bounded memory in a run of any
    length (about 1,100 counters, 9 KB), quantiles within ``relative_error`` of the exact ones.

    Bucket ``i`` holds ``[min_ms * g**i, min_ms * g**(i+1))`` with ``g = 1 + 2 *
    relative_error``; a quantile is the geometric middle of its bucket, so it is within
    ``relative_error`` of every value in that bucket. Values below ``min_ms`` (1 us) count in
    the first bucket, above ``max_ms`` (1 h) in the last. The first ``HEAD_SAMPLES`` raw
    values are kept so a summary can leave warm-up batches out."""

    relative_error: float = 0.01
    min_ms: float = 0.001
    max_ms: float = 3_600_000.0
    count: int = 0
    total_ms: float = 0.0
    max_seen: float = 0.0
    head: list[float] = field(default_factory=list)
    counts: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._log_g = math.log1p(2 * self.relative_error)
        self._buckets = math.ceil(math.log(self.max_ms / self.min_ms) / self._log_g) + 1
        self.counts = np.zeros(self._buckets, dtype=np.int64)

    def _index(self, ms: float) -> int:
        if ms <= self.min_ms:
            return 0
        return min(int(math.log(ms / self.min_ms) / self._log_g), self._buckets - 1)

    def record(self, ms: float) -> None:
        self.counts[self._index(ms)] += 1
        self.count += 1
        self.total_ms += ms
        self.max_seen = max(self.max_seen, ms)
        if len(self.head) < HEAD_SAMPLES:
            self.head.append(ms)

    def record_many(self, values: np.ndarray) -> None:
        """Vectorised ``record`` (tests and benchmarks)."""
        values = np.asarray(values, dtype=np.float64)
        room = HEAD_SAMPLES - len(self.head)
        for ms in values[: max(room, 0)]:  # the kept head goes through ``record``: same index
            self.record(float(ms))
        values = values[max(room, 0) :]
        if not len(values):
            return
        ratio = np.maximum(values, self.min_ms) / self.min_ms
        idx = np.minimum((np.log(ratio) / self._log_g).astype(np.int64), self._buckets - 1)
        self.counts += np.bincount(idx, minlength=self._buckets)
        self.count += len(values)
        self.total_ms += float(values.sum())
        self.max_seen = max(self.max_seen, float(values.max()))

    def _counts(self, skip: int) -> np.ndarray:
        if skip <= 0:
            return self.counts
        if skip > len(self.head):
            raise InvalidInputError(f"can leave out at most the first {HEAD_SAMPLES} samples")
        counts = self.counts.copy()
        for ms in self.head[:skip]:
            counts[self._index(ms)] -= 1
        return counts

    def _value(self, index: int) -> float:
        low = self.min_ms * math.exp(index * self._log_g)
        return min(low * math.exp(self._log_g / 2), self.max_seen)

    def percentile(self, q: float, skip: int = 0) -> float:
        counts = self._counts(skip)
        n = int(counts.sum())
        if n == 0:
            return 0.0
        rank = q / 100 * (n - 1)  # as numpy's default (linear) percentile places it
        index = int(np.searchsorted(np.cumsum(counts), rank, side="right"))
        return self._value(min(index, self._buckets - 1))

    def summary(self, skip: int = 0) -> dict[str, float]:
        """Percentiles, optionally without the first ``skip`` batches (warm-up)."""
        counts = self._counts(skip)
        if not counts.any():
            return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
        top = self.max_seen
        if skip and max(self.head[:skip]) >= top:  # the maximum was a warm-up batch
            top = self._value(int(np.flatnonzero(counts)[-1]))
        return {
            "p50_ms": round(self.percentile(50, skip), 3),
            "p99_ms": round(self.percentile(99, skip), 3),
            "max_ms": round(top, 3),
        }


@dataclass
class EngineMetrics:
    events_in: int = 0
    events_out: int = 0
    late_events: int = 0
    dead_letters: int = 0
    batches: int = 0
    checkpoints: int = 0
    # Checkpoints that fell due while the sink still committed the previous one, and
    # waited for it (the runner keeps one in flight): many means the sink is the limit.
    checkpoints_deferred: int = 0
    watermark_ms: int | None = None
    watermark_lag_ms: int | None = None
    source_blocked_s: float = 0.0
    sink_blocked_s: float = 0.0
    source_waits: int = 0  # batches the source had to hold back: the queue was full
    sink_waits: int = 0  # outputs the operators had to hold back: the sink queue was full
    max_source_queue: int = 0
    max_sink_queue: int = 0
    idle_s: float = 0.0  # the operator thread waited for input
    emit_event_ms: int | None = None  # newest event time of the last batch processed
    partition_in: dict[str, int] = field(default_factory=dict)  # "source/partition" → rows
    dead_by_reason: dict[str, int] = field(default_factory=dict)  # reason kind → rows
    telemetry_s: float = 0.0  # spent exporting metrics (engine.telemetry), all threads
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    operators: dict[str, OperatorMetrics] = field(default_factory=dict)
    # Counters restored from the checkpoint a run resumed from: the counters above are
    # the pipeline's totals, and ``this_run()`` what this run added.
    resumed: dict[str, int] = field(default_factory=dict)

    def this_run(self) -> dict[str, int]:
        totals = {
            "events_in": self.events_in,
            "events_out": self.events_out,
            "late_events": self.late_events,
            "dead_letters": self.dead_letters,
        }
        return {k: v - self.resumed.get(k, 0) for k, v in totals.items()}

    def state_rows(self) -> int:
        return sum(op.state_rows for op in self.operators.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "events_in": self.events_in,
            "events_out": self.events_out,
            "late_events": self.late_events,
            "dead_letters": self.dead_letters,
            "batches": self.batches,
            "checkpoints": self.checkpoints,
            "checkpoints_deferred": self.checkpoints_deferred,
            "watermark_ms": self.watermark_ms,
            "watermark_lag_ms": self.watermark_lag_ms,
            "state_rows": self.state_rows(),
            "source_blocked_s": round(self.source_blocked_s, 4),
            "sink_blocked_s": round(self.sink_blocked_s, 4),
            "source_waits": self.source_waits,
            "sink_waits": self.sink_waits,
            "max_source_queue": self.max_source_queue,
            "max_sink_queue": self.max_sink_queue,
            **self.latency.summary(),
            "operators": {name: op.as_dict() for name, op in self.operators.items()},
        }


MetricsListener = Callable[[EngineMetrics], None]
