"""Watermarks, lateness and dead letters: nothing is silently dropped."""

import threading
import time

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from dataflare_platform.engine import (
    CollectSink,
    Pipeline,
    Runner,
    RunnerConfig,
    Stream,
    TableSource,
    count,
    sum_,
    tumbling,
)
from dataflare_platform_tests.engine.helpers import T0, events


def windowed_count(source, sink, lateness="0s", ooo_ms=1_000, **pipeline_settings):
    return (
        Stream.source(source, out_of_orderness_ms=ooo_ms, **pipeline_settings)
        .window(tumbling("10s"), lateness=lateness)
        .agg(count("n"), sum_("value", "total"))
        .sink(sink)
    )


def test_events_beyond_allowed_lateness_go_to_the_side_output():
    # 0..59 s in order, then stragglers 30 s (late) and 0.5 s (not late) behind.
    times = [*range(0, 60_000, 100), 25_000, 59_500, 20_000]
    table = events(times)
    sink = CollectSink()
    result = Runner(
        windowed_count(TableSource.single("e", table), sink), RunnerConfig(batch_rows=50)
    ).run()
    late = sink.side("late")
    assert late.height == result.metrics.late_events == 2
    assert sorted(pl.Series([eval_payload(p)["value"] for p in late["payload"]])) == [600, 602]
    out = sink.result()
    # in = out + late: every event is counted in a window or in the side output.
    assert out["n"].sum() + late.height == table.num_rows
    assert out["total"].sum() + 600 + 602 == sum(range(table.num_rows))


def test_allowed_lateness_keeps_a_window_open():
    times = [*range(0, 60_000, 100), 25_000]  # 35 s behind the newest event
    sink = CollectSink()
    result = Runner(
        windowed_count(TableSource.single("e", events(times)), sink, lateness="40s"),
        RunnerConfig(batch_rows=50),
    ).run()
    assert result.metrics.late_events == 0
    counts = dict(
        zip(sink.result()["window_start"].dt.epoch("ms") - T0, sink.result()["n"], strict=True)
    )
    assert counts[20_000] == 101


def test_watermark_is_the_minimum_across_partitions_and_idle_ones_are_skipped():
    fast = events(range(0, 60_000, 100))
    quiet = events([0])  # one event, then silence
    source = TableSource("e", {"fast": fast, "quiet": quiet})
    stop = threading.Event()

    def run(idle_ms):
        sink = CollectSink()
        runner = Runner(
            windowed_count(source, sink, idle_timeout_ms=idle_ms),
            RunnerConfig(batch_rows=100, checkpoint_every=1, poll_interval_s=0.01),
        )
        thread = threading.Thread(target=lambda: runner.run(mode="continuous", stop=stop))
        thread.start()
        time.sleep(1.5)
        stop.set()
        thread.join(timeout=30)
        stop.clear()
        return sink

    # Without an idle timeout the quiet partition holds the watermark at 0 - 1 s.
    assert run(None).result().height == 0
    # With one, it stops counting once idle and the windows of the busy one fire.
    fired = run(200).result()
    assert fired.height >= 5
    assert fired["n"].sum() >= 500


def test_bad_batches_and_rows_go_to_dead_letters_and_the_pipeline_keeps_running():
    good = events(range(0, 30_000, 100))
    wrong_schema = pa.table({"key": [1, 2], "date_time": pa.array([5, 6], pa.int64())})
    with_nulls = events([31_000, 32_000, 33_000]).set_column(
        2, "date_time", pa.array([T0 + 31_000, None, T0 + 33_000], pa.timestamp("ms"))
    )
    future = events([34_000, 10 * 86_400_000])  # second row: 10 days ahead
    source = TableSource(
        "e",
        {"a": pa.concat_tables([good]), "b": wrong_schema, "c": with_nulls, "d": future},
    )
    sink = CollectSink()
    result = Runner(windowed_count(source, sink), RunnerConfig(batch_rows=1_000)).run()
    dead = sink.side("dead_letter")
    reasons = dead["reason"].to_list()
    assert sum("schema mismatch" in r for r in reasons) == 2
    assert sum("null event time" in r for r in reasons) == 1
    assert sum("ahead of the stream" in r for r in reasons) == 1
    assert result.metrics.dead_letters == dead.height == 4
    events_in = sum(t.num_rows for t in source.tables.values())
    assert result.metrics.events_in == events_in
    # in = out + rejected (+ late, none here)
    assert sink.result()["n"].sum() + dead.height + result.metrics.late_events == events_in
    assert '"key":1' in dead.filter(pl.col("reason").str.contains("schema"))["payload"][0]


def test_a_sparse_stream_is_progress_not_future_events():
    """10 000 events 5 s apart span 14 h in one batch: nothing is "ahead of the stream";
    a single row 10 days ahead in the middle of it still is, and so is a second one
    behind it (the first must not raise the bar)."""
    times = np.arange(10_000, dtype=np.int64) * 5_000
    times[4_000] = times[3_999] + 10 * 86_400_000
    times[4_001] = times[3_999] + 9 * 86_400_000
    sink = CollectSink()
    source = TableSource.single("e", events(times))
    result = Runner(windowed_count(source, sink), RunnerConfig(batch_rows=10_000)).run()
    dead = sink.side("dead_letter")
    assert result.metrics.dead_letters == 2
    assert dead.height == 2 and dead["reason"].str.contains("ahead of the stream").all()
    assert sink.result()["n"].sum() + dead.height == 10_000


def eval_payload(payload: str) -> dict:
    import json

    return json.loads(payload)


@pytest.mark.parametrize("batch_rows", [1, 7, 1000])
def test_late_detection_does_not_depend_on_batch_size(batch_rows):
    rng = np.random.default_rng(1)
    times = np.arange(0, 40_000, 50) + rng.integers(-800, 1, size=800)  # jitter < 1 s
    times = np.concatenate([times, [1_000, 39_000]])  # 38 s behind, and fine
    sink = CollectSink()
    result = Runner(
        windowed_count(TableSource.single("e", events(times)), sink),
        RunnerConfig(batch_rows=batch_rows),
    ).run()
    assert result.metrics.late_events == 1
    assert sink.result()["n"].sum() == len(times) - 1


def test_pipeline_without_a_sink_is_refused():
    pipeline = Pipeline("p")
    pipeline.source(TableSource.single("e", events([0])))
    with pytest.raises(ValueError, match="no sink"):
        Runner(pipeline).run()


@pytest.mark.parametrize("batch_rows", [37, 4_000])
def test_very_late_events_of_a_skewed_stream_are_in_a_window_or_a_side_row(batch_rows):
    """A stream unlike the reference generator's (Zipf-hot sparse 40-bit auction ids)
    with 30 % of events up to 12 s late against a 2 s delay: per auction, the windows'
    counts and price sums plus the late side rows' are exactly the input's."""
    from dataflare_platform_tests.nexmark_data import skewed_tables

    bids = skewed_tables(23, 0.3, 12_000)["bids"].select(["auction", "price", "date_time"])
    sink = CollectSink()
    pipeline = (
        Stream.source(TableSource.single("bids", bids), out_of_orderness_ms=2_000)
        .key_by("auction")
        .window(tumbling("10s"))
        .agg(count("n"), sum_("price", "total"))
        .sink(sink)
    )
    result = Runner(pipeline, RunnerConfig(batch_rows=batch_rows)).run()
    late = sink.side("late")
    assert late.height == result.metrics.late_events > bids.num_rows // 20
    late_rows = pl.DataFrame([eval_payload(p) for p in late["payload"]]).select(
        pl.col("auction").cast(pl.Int64), pl.col("price").cast(pl.Int64)
    )
    counted = pl.concat(
        [
            sink.result().group_by("auction").agg(pl.col("n").sum(), pl.col("total").sum()),
            late_rows.group_by("auction").agg(
                pl.len().alias("n"), pl.col("price").sum().alias("total")
            ),
        ],
        how="vertical_relaxed",
    )
    got = counted.group_by("auction").agg(pl.col("n").sum(), pl.col("total").sum()).sort("auction")
    want = (
        pl.from_arrow(bids)
        .group_by("auction")
        .agg(pl.len().alias("n"), pl.col("price").sum().alias("total"))
        .sort("auction")
    )
    assert got.select(pl.col("auction"), pl.col("n").cast(pl.Int64), "total").equals(
        want.select("auction", pl.col("n").cast(pl.Int64), "total")
    )
