"""The processing-time window (Nexmark q12) on the pane stores: a rollback leaves no
trace of the batch it undoes, a checkpoint in the shape written before the pane stores
restores, and windows close by the clock, each (window, key) once."""

from __future__ import annotations

import polars as pl

from dataflare_platform.engine.aggregations import count, sum_
from dataflare_platform.engine.operators.pane_stores import PANE
from dataflare_platform.engine.operators.windows import ProcessingTimeAggregate
from dataflare_platform.engine.watermarks import MAX_WATERMARK

T0 = 1_700_000_000_000  # a multiple of 10 s


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _operator(clock: Clock, keys: list[str]) -> ProcessingTimeAggregate:
    op = ProcessingTimeAggregate(10_000, keys, [count("n"), sum_("v", "total")], clock)
    op.bind("t")
    return op


def _rows(keys: list[int], values: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"k": keys, "v": values, "t": [0] * len(keys)})


def _counts(frame: pl.DataFrame | None) -> dict:
    assert frame is not None
    return {
        (int(w.timestamp() * 1000), k): (n, s)
        for w, k, n, s in frame.select("window_start", "k", "n", "total").rows()
    }


def test_a_rollback_undoes_its_batch_in_either_pane_store() -> None:
    """Integer keys fold into numpy arrays, string keys into frames: a batch rolled back
    leaves neither."""
    for keys, cast in ((["k"], pl.Int64), (["k"], pl.String)):
        clock = Clock(T0 + 1_000)
        op = _operator(clock, keys)
        op.process(_rows([1, 2, 1], [5, 6, 7]).with_columns(pl.col("k").cast(cast)))
        saved = op.savepoint()
        op.process(_rows([1, 3], [100, 100]).with_columns(pl.col("k").cast(cast)))
        op.rollback(saved)
        op.process(_rows([2], [1]).with_columns(pl.col("k").cast(cast)))
        out = op.advance(MAX_WATERMARK).with_columns(pl.col("k").cast(pl.Int64))
        assert _counts(out) == {(T0, 1): (2, 12), (T0, 2): (2, 7)}


def test_windows_close_by_the_clock_once_each() -> None:
    clock = Clock(T0 + 1_000)
    op = _operator(clock, ["k"])
    assert op.process(_rows([1, 2], [1, 1]))[0] is None
    clock.now = T0 + 12_000  # the first window closed: emitted by the next batch
    assert _counts(op.process(_rows([1], [4]))[0]) == {(T0, 1): (1, 1), (T0, 2): (1, 1)}
    assert op.advance(0) is None  # a watermark move re-reads the clock: nothing new
    clock.now = T0 + 20_000
    assert _counts(op.advance(0)) == {(T0 + 10_000, 1): (1, 4)}
    assert op.advance(MAX_WATERMARK) is None


def test_a_checkpoint_of_the_shape_before_the_pane_stores_restores() -> None:
    """(window, keys, partials): what q12's state held before, and what it still writes."""
    clock = Clock(T0 + 15_000)
    op = _operator(clock, ["k"])
    old = pl.DataFrame(
        {PANE: [T0 + 10_000, T0 + 10_000], "k": [1, 2], "__n": [3, 1], "__total": [30, 2]}
    )
    op.restore({op.state_key: old.to_arrow()})
    op.process(_rows([1], [5]))
    written = pl.from_arrow(op.snapshot()[op.state_key])
    assert written.columns == [PANE, "k", "__n", "__total"]
    clock.now = T0 + 20_000
    assert _counts(op.advance(0)) == {(T0 + 10_000, 1): (4, 35), (T0 + 10_000, 2): (1, 2)}
