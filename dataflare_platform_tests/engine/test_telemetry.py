"""The engine's exported metrics agree with its own counters and with the sink's rows."""

from __future__ import annotations

import pyarrow as pa
import pytest

from dataflare_platform import observability
from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, TableSource
from dataflare_platform.observability.prometheus import exposition
from dataflare_platform_tests.engine.helpers import T0, events
from dataflare_platform_tests.engine.test_time_and_bad_input import windowed_count
from dataflare_platform_tests.observability.fixtures import metrics_dir
from dataflare_platform_tests.observability.scrape import samples, value

__all__ = ["metrics_dir"]


def test_a_run_exports_records_lag_dead_letters_and_latency(metrics_dir):
    good = events(range(0, 30_000, 100))
    wrong_schema = pa.table({"key": [1, 2], "date_time": pa.array([5, 6], pa.int64())})
    with_nulls = events([31_000, 32_000, 33_000]).set_column(
        2, "date_time", pa.array([T0 + 31_000, None, T0 + 33_000], pa.timestamp("ms"))
    )
    source = TableSource("e", {"a": good, "b": wrong_schema, "c": with_nulls})
    sink = CollectSink()
    pipeline = windowed_count(source, sink)
    result = Runner(pipeline, RunnerConfig(batch_rows=100, checkpoint_every=3)).run()
    text = exposition(metrics_dir)
    name = pipeline.name
    m = result.metrics
    assert value(text, "dataflare_engine_records_in_total", pipeline=name) == m.events_in == 305
    assert value(text, "dataflare_engine_records_out_total", pipeline=name) == (
        sink.result().height
    )
    for partition, rows in (("a", 300), ("b", 2), ("c", 3)):
        labels = {"pipeline": name, "source": "e", "partition": partition}
        assert value(text, "dataflare_source_records_in_total", **labels) == rows
        assert value(text, "dataflare_source_records_lag", **labels) == 0  # drained
    dead = {
        reason: value(text, "dataflare_engine_dead_letters_total", pipeline=name, reason=reason)
        for reason in ("schema_mismatch", "null_event_time")
    }
    assert dead == {"schema_mismatch": 2, "null_event_time": 1}
    for op, stats in m.operators.items():
        labels = {"pipeline": name, "operator": op}
        assert value(text, "dataflare_operator_records_in_total", **labels) == stats.rows_in
        assert value(text, "dataflare_operator_records_out_total", **labels) == stats.rows_out
    assert value(text, "dataflare_engine_batches_total", pipeline=name) == m.batches
    assert value(text, "dataflare_engine_latency_seconds_count", pipeline=name) == (m.latency.count)
    assert value(text, "dataflare_engine_checkpoints_total", pipeline=name) == m.checkpoints
    busy = sum(stats.seconds for stats in m.operators.values())
    assert value(text, "dataflare_engine_busy_seconds_total", pipeline=name) == pytest.approx(busy)
    # The newest event time processed is 2026-01-01 + 33 s: the lag is the time since.
    lag = value(text, "dataflare_engine_emit_event_time_lag_seconds", pipeline=name)
    assert lag > 0
    assert len([n for n, _ in samples(text) if n.startswith("dataflare_")]) > 40


def test_a_resumed_run_exports_only_what_it_added(metrics_dir):
    """Counters restored from a checkpoint were exported by the run that made them: the
    exported total equals the pipeline's total, not the sum of both runs' totals."""
    source = TableSource.single("e", events(range(0, 10_000, 10)))
    sink = CollectSink()
    pipeline = windowed_count(source, sink)
    first = Runner(pipeline, RunnerConfig(batch_rows=100)).run(until={"e/0": 400})
    assert first.metrics.events_in == 400
    second = Runner(pipeline, RunnerConfig(batch_rows=100)).run()
    assert second.metrics.events_in == 1_000  # the pipeline's total, restored + added
    text = exposition(metrics_dir)
    assert value(text, "dataflare_engine_records_in_total", pipeline=pipeline.name) == 1_000
    labels = {"pipeline": pipeline.name, "source": "e", "partition": "0"}
    assert value(text, "dataflare_source_records_in_total", **labels) == 1_000


def test_metrics_off_cost_nothing_and_write_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "m"))
    monkeypatch.delenv("DATAFLARE_METRICS", raising=False)
    observability.configure(observability.ObservabilitySettings.from_env())
    try:
        assert observability.instruments() is None
        source = TableSource.single("e", events(range(0, 1_000, 10)))
        result = Runner(windowed_count(source, CollectSink()), RunnerConfig(batch_rows=10)).run()
        assert result.metrics.events_in == 100
        assert not (tmp_path / "m").exists()
    finally:
        observability.configure(None)


class _FailingCommitSink(CollectSink):
    """Commits fine ``good`` times, then the sink's transaction fails (a full disk, a
    dropped connection)."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.good = good

    def commit_batch(self, *args, **kwargs):
        if self.good == 0:
            raise OSError("disk full")
        self.good -= 1
        return super().commit_batch(*args, **kwargs)


def test_a_failed_commit_is_counted_before_the_run_stops(metrics_dir):
    source = TableSource.single("e", events(range(0, 10_000, 10)))
    sink = _FailingCommitSink(good=2)
    pipeline = windowed_count(source, sink)
    with pytest.raises(OSError, match="disk full"):
        Runner(pipeline, RunnerConfig(batch_rows=100, checkpoint_every=2)).run()
    text = exposition(metrics_dir)
    name = pipeline.name
    assert (
        value(text, "dataflare_engine_checkpoint_failures_total", pipeline=name, phase="commit")
        == 1
    )
    assert (
        value(text, "dataflare_engine_checkpoint_failures_total", pipeline=name, phase="snapshot")
        is None
    )
