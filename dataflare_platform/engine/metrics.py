"""Engine metrics: counters, a batch-latency histogram and a listener hook.

The hook is a plain callable so the control plane (Dagster metadata) or an
OpenTelemetry exporter can subscribe without the engine depending on either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


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


@dataclass
class LatencyHistogram:
    """Batch latencies in ms; raw samples in a growing float array (one per batch, so
    even a 10 M-event run at 10k rows per batch holds only 1000 values)."""

    samples: list[float] = field(default_factory=list)

    def record(self, ms: float) -> None:
        self.samples.append(ms)

    def percentile(self, q: float, skip: int = 0) -> float:
        samples = self.samples[skip:]
        return float(np.percentile(samples, q)) if samples else 0.0

    def summary(self, skip: int = 0) -> dict[str, float]:
        """Percentiles, optionally without the first ``skip`` batches (warm-up)."""
        samples = self.samples[skip:]
        return {
            "p50_ms": round(self.percentile(50, skip), 3),
            "p99_ms": round(self.percentile(99, skip), 3),
            "max_ms": round(max(samples), 3) if samples else 0.0,
        }


@dataclass
class EngineMetrics:
    events_in: int = 0
    events_out: int = 0
    late_events: int = 0
    dead_letters: int = 0
    batches: int = 0
    checkpoints: int = 0
    watermark_ms: int | None = None
    watermark_lag_ms: int | None = None
    source_blocked_s: float = 0.0
    sink_blocked_s: float = 0.0
    source_waits: int = 0  # batches the source had to hold back: the queue was full
    sink_waits: int = 0  # outputs the operators had to hold back: the sink queue was full
    max_source_queue: int = 0
    max_sink_queue: int = 0
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
