"""The shortcuts that cut per-batch work (issue 21 §3) decide exactly what the long way
decides: the runner's check that no row of a batch is behind its watermark, and the
highest-row windows' split of a batch spanning a few windows by masks."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from dataflare_platform.engine import (
    CollectSink,
    Runner,
    RunnerConfig,
    Stream,
    TableSource,
    tumbling,
)
from dataflare_platform.engine.runner import _none_behind
from dataflare_platform.engine.watermarks import MIN_WATERMARK
from dataflare_platform_tests.engine.helpers import T0, events

DELAY = 4_000


def _exact(times: np.ndarray, prev: int, others: int, emitted: int) -> bool:
    """No row behind its watermark, by the per-row watermark the runner computes."""
    before = np.maximum.accumulate(np.concatenate(([prev], times[:-1])))
    own = np.where(before == MIN_WATERMARK, MIN_WATERMARK, before - DELAY)
    row_wm = np.maximum(np.minimum(own, others), emitted)
    return bool((times >= row_wm).all())


@pytest.mark.parametrize("rows", [1, 7, 1024, 1025, 5000])
@pytest.mark.parametrize("disorder_ms", [0, 1_000, 3_999, 4_001, 20_000])
def test_none_behind_never_passes_a_batch_with_a_row_behind(rows, disorder_ms):
    rng = np.random.default_rng(rows * 31 + disorder_ms)
    passed = 0
    for trial in range(40):
        times = T0 + np.arange(rows, dtype=np.int64) * 3 + rng.integers(0, disorder_ms + 1, rows)
        if trial % 5 == 0 and rows > 1:
            times[rng.integers(0, rows)] -= rng.integers(0, 3 * DELAY)  # one straggler
        prev = MIN_WATERMARK if trial % 4 == 0 else int(times[0]) + int(rng.integers(-9_000, 9_000))
        emitted = MIN_WATERMARK if trial % 3 else prev - DELAY - int(rng.integers(0, 2_000))
        newest = _none_behind(times, prev, DELAY, emitted)
        if newest is None:
            continue
        passed += 1
        # Whatever the other partitions' watermark: only the own partition's can be above.
        assert _exact(times, prev, others=2**62, emitted=emitted)
        assert newest == max(prev, int(times.max()))
    if disorder_ms <= 1_000 and rows > 1:
        assert passed > 0  # in-order batches do take the shortcut


def _top_by_window(table, size_ms: int) -> pl.DataFrame:
    """Independent Polars: rows with the highest value per tumbling window, ties kept."""
    df = pl.from_arrow(table)
    start = (pl.col("date_time").cast(pl.Int64) // size_ms * size_ms).cast(pl.Datetime("ms"))
    return (
        df.with_columns(start.alias("window_start"))
        .filter(pl.col("value") == pl.col("value").max().over("window_start"))
        .sort("window_start", "date_time", "key")
    )


@pytest.mark.parametrize("batch_rows", [5, 64, 1000, 5000])
@pytest.mark.parametrize("size_ms", [100, 1_000, 30_000])
def test_top_rows_per_window_at_any_batch_span(batch_rows, size_ms):
    """Batches inside one window, across a few (split by masks) and across many (split by
    each row's window start) give the same leaders, ties and all."""
    rng = np.random.default_rng(size_ms + batch_rows)
    n = 5_000
    times = np.sort(rng.integers(0, 60_000, n))
    table = events(times, keys=np.arange(n), values=rng.integers(0, 40, n))
    sink = CollectSink()
    stream = Stream.source(TableSource.single("e", table), out_of_orderness_ms=1_000)
    pipeline = stream.window(tumbling(f"{size_ms}ms")).top_rows("value").sink(sink)
    result = Runner(pipeline, RunnerConfig(batch_rows=batch_rows)).run()
    assert result.metrics.late_events == 0
    got = pl.concat(sink.outputs).sort("window_start", "date_time", "key")
    want = _top_by_window(table, size_ms)
    assert got.select(want.columns).equals(want)
    assert got.height >= 60_000 // size_ms  # every window has leaders (ties: more)
