"""Runner behaviour: backpressure, continuous mode with graceful stop and resume, metrics."""

import threading
import time

import polars as pl
import pyarrow as pa
import pytest

from dataflare_platform.engine import (
    CollectSink,
    Runner,
    RunnerConfig,
    Stream,
    TableSource,
    count,
    tumbling,
)
from dataflare_platform.engine.metrics import EngineMetrics
from dataflare_platform_tests.engine.helpers import events
from dataflare_platform_tests.waits import wait_until


class CountingSource(TableSource):
    """A table source that counts the batches handed to the runner."""

    reads = 0

    def read(self, partition: str, offset: int, max_rows: int) -> pa.Table:
        table = super().read(partition, offset, max_rows)
        if table.num_rows:
            self.reads += 1
        return table


class SlowSink(CollectSink):
    """Takes 20 ms per batch and records how far ahead the source ran at each write."""

    def __init__(self, source: CountingSource) -> None:
        super().__init__()
        self.source = source
        self.writes = 0
        self.ahead: list[int] = []

    def write(self, output, side) -> None:
        time.sleep(0.02)
        self.writes += 1
        self.ahead.append(self.source.reads - self.writes)
        super().write(output, side)


def test_a_slow_sink_throttles_the_source_and_memory_stays_bounded():
    source = CountingSource.single("e", events(range(0, 200_000, 100)))
    sink = SlowSink(source)
    config = RunnerConfig(batch_rows=20, source_queue=3, sink_queue=2, checkpoint_every=5)
    pipeline = Stream.source(source).filter(pl.col("value") >= 0).sink(sink)
    result = Runner(pipeline, config).run()
    m = result.metrics
    assert m.events_out == 2_000
    # The source may run ahead by the two queues plus one batch in each stage, no more.
    assert max(sink.ahead) <= config.source_queue + config.sink_queue + 3
    assert m.max_source_queue <= config.source_queue
    assert m.max_sink_queue <= config.sink_queue
    # The source was held back by full queues instead of buffering (counted, not timed).
    assert m.source_waits > 0 and m.sink_waits > 0


def test_continuous_run_stops_gracefully_and_resumes_from_its_checkpoint():
    table = events(range(0, 120_000, 100))
    half = TableSource("e", {"0": table.slice(0, 600)})
    sink = CollectSink()
    stop = threading.Event()

    def build(source):
        return (
            Stream.source(source, out_of_orderness_ms=1_000)
            .window(tumbling("10s"))
            .agg(count("n"))
            .sink(sink)
        )

    config = RunnerConfig(batch_rows=50, checkpoint_every=2, poll_interval_s=0.01)
    runner = Runner(build(half), config)
    done: list = []
    thread = threading.Thread(target=lambda: done.append(runner.run("continuous", stop=stop)))
    thread.start()
    deadline = time.monotonic() + 20
    while (sink.checkpoint is None or sink.checkpoint.offsets.get("e/0", 0) < 600) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.02)
    stop.set()
    thread.join(timeout=30)
    first = done[0]
    assert not first.finished
    assert sink.checkpoint.offsets == {"e/0": 600}
    windows_so_far = sink.result()["n"].sum()
    assert 0 < windows_so_far < 600  # the open window was not flushed at stop

    # New data arrives; a bounded run resumes at offset 600 and finishes the stream.
    full = TableSource("e", {"0": table})
    second = Runner(build(full), config).run()
    assert second.finished
    out = sink.result()
    assert out["n"].sum() == 1_200
    assert out["window_start"].n_unique() == out.height  # each window exactly once


def test_metrics_listener_sees_operators_latency_and_watermark():
    seen: list[dict] = []

    def listener(metrics: EngineMetrics) -> None:
        seen.append(metrics.as_dict() | {"ops": dict(metrics.operators)})

    sink = CollectSink()
    pipeline = (
        Stream.source(TableSource.single("e", events(range(0, 60_000, 10))))
        .filter(pl.col("value") % 2 == 0)
        .window(tumbling("10s"))
        .agg(count("n"))
        .sink(sink)
    )
    result = Runner(
        pipeline, RunnerConfig(batch_rows=500, checkpoint_every=4), listener=listener
    ).run()
    assert seen and seen[-1]["events_in"] == 6_000
    ops = result.metrics.operators
    filter_stats = next(v for k, v in ops.items() if "Filter" in k)
    window_stats = next(v for k, v in ops.items() if "WindowAggregate" in k)
    assert (filter_stats.rows_in, filter_stats.rows_out) == (6_000, 3_000)
    assert window_stats.rows_in == 3_000 and window_stats.rows_out == 6
    assert any(s["watermark_ms"] is not None for s in seen)
    assert max(s["state_rows"] for s in seen) > 0
    assert result.metrics.state_rows() == 0  # closed windows are evicted
    summary = result.metrics.latency.summary()
    # Counts and the order of the percentiles; what they measure is for the benchmarks.
    assert summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert result.metrics.latency.count == result.metrics.batches
    # Each step's thread CPU: one sample per batch it processed and per advance.
    for stats in (filter_stats, window_stats):
        cpu = stats.cpu_summary()
        assert cpu["process"]["calls"] == stats.process_cpu.count == result.metrics.batches
        assert cpu["advance"]["calls"] == stats.advance_cpu.count >= result.metrics.batches
        process = cpu["process"]
        assert process["p50_ms"] <= process["p99_ms"] <= process["max_ms"]
        assert process["total_s"] * 1000 == pytest.approx(stats.process_cpu.total_ms, abs=0.1)


class FailingSink(CollectSink):
    def write(self, output, side) -> None:
        raise RuntimeError("disk full")


def test_a_failing_sink_stops_the_run_with_its_error_and_commits_nothing():
    sink = FailingSink()
    pipeline = Stream.source(TableSource.single("e", events(range(0, 100_000, 10)))).sink(sink)
    config = RunnerConfig(batch_rows=10, source_queue=1, sink_queue=1)
    with pytest.raises(RuntimeError, match="disk full"):
        Runner(pipeline, config).run()
    assert sink.checkpoint is None and sink.outputs == []


class HeldCommits(CollectSink):
    """Holds each commit until the runner has moved on: two more batches went through
    (each with a checkpoint due: ``checkpoint_every=1``) or all ``batches`` did, or the
    run took its final checkpoint. Records how many checkpoints had been taken and not
    committed then."""

    def __init__(self, batches: int) -> None:
        super().__init__()
        self.batches = batches
        self.metrics: EngineMetrics | None = None  # the run's, from its listener
        self.in_flight: list[int] = []
        self.offsets: list[int] = []

    def commit_batch(self, output, side, checkpoint) -> None:
        m = wait_until("the run's metrics", lambda: self.metrics, poll_s=0.005)
        taken = m.checkpoints
        wait_until(
            "two more batches or the final checkpoint",
            lambda: m.batches >= min(checkpoint.batches + 2, self.batches) or m.checkpoints > taken,
            poll_s=0.005,
        )
        self.in_flight.append(m.checkpoints - len(self.offsets))
        self.offsets.append(checkpoint.offsets["e/0"])
        super().commit_batch(output, side, checkpoint)


def test_a_checkpoint_falling_due_while_the_last_one_commits_waits_for_it():
    """One checkpoint in flight at a time: while the sink commits one, the batches go on
    and the checkpoints that fall due are deferred into the next (a growing state made
    each checkpoint dearer and they queued up behind the sink, each a copy of the state).
    The output is the same as with commits that never wait."""
    table = events(range(0, 40_000, 10), keys=[i % 7 for i in range(4_000)])

    def build(sink):
        return (
            Stream.source(TableSource.single("e", table))
            .window(tumbling("1s"))
            .agg(count("n"))
            .sink(sink)
        )

    config = RunnerConfig(batch_rows=40, checkpoint_every=1)
    sink = HeldCommits(batches=table.num_rows // config.batch_rows)
    result = Runner(build(sink), config, listener=lambda m: setattr(sink, "metrics", m)).run()
    assert result.finished
    m = result.metrics
    assert m.checkpoints_deferred > 0 and m.checkpoints < m.batches
    # Counted once per deferred checkpoint (each is taken later), not once per batch.
    assert m.checkpoints_deferred <= m.checkpoints
    assert m.checkpoints == len(sink.offsets)
    # Each commit found only itself in flight, but the final checkpoint is taken without
    # waiting: the commit before it may have found it taken too.
    assert set(sink.in_flight[:-2]) == {1} and max(sink.in_flight[-2:]) <= 2
    # In order (the last offset may be checkpointed more than once: due after the last
    # batch, after the source reported its end, and the final checkpoint).
    assert sink.offsets == sorted(sink.offsets) and sink.offsets[-1] == table.num_rows

    instant = CollectSink()
    Runner(build(instant), config).run()
    assert sink.result().sort("window_start").equals(instant.result().sort("window_start"))
