"""The numpy pane store must give exactly what the Polars one gives, for every window
shape it takes, and hand its state over to the Polars store (or a checkpoint) intact."""

from __future__ import annotations

from concurrent.futures import Executor, Future

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflare_platform.engine.aggregations import count, count_distinct, max_, mean, min_, sum_
from dataflare_platform.engine.operators import pane_stores
from dataflare_platform.engine.operators.pane_stores import ArrayPanes, FramePanes
from dataflare_platform.engine.operators.windows import Sliding, TopN, Tumbling, WindowAggregate
from dataflare_platform_tests.engine.helpers import drive

T0 = 1_700_000_000_000
AGGS = [
    count("n"),
    count("n_value", "value"),
    sum_("value", "total"),
    min_("value", "lo"),
    max_("value", "hi"),
    mean("value", "avg"),
    min_("date_time", "first_seen"),
    max_("price", "top_price"),
]


def events(seed: int, n: int = 4_000, key_span: int = 300, null_share: float = 0.1):
    """Out-of-order events over ~60 s with integer values that have some nulls and float
    prices (exact sums either way: integers, and floats that are multiples of 1/4)."""
    rng = np.random.default_rng(seed)
    times = T0 + np.sort(rng.integers(0, 60_000, n)) + rng.integers(-1_500, 1_500, n)
    values = rng.integers(-1_000, 1_000, n)
    return pl.DataFrame(
        {
            "key": rng.integers(0, key_span, n) * (1 if key_span < 10**6 else 7919),
            "value": pl.Series(values).set(pl.Series(rng.random(n) < null_share), None),
            "price": rng.integers(0, 400, n) / 4,
            "date_time": pl.Series(times).cast(pl.Datetime("ms")),
        }
    )


def operator(window, keys=("key",), aggs=AGGS, top=None, frames_only=False) -> WindowAggregate:
    op = WindowAggregate(window, list(keys), list(aggs), 0, top)
    op.time_column = "date_time"
    op._frames_only = frames_only
    return op


def finish(op: WindowAggregate, out: list[pl.DataFrame]) -> pl.DataFrame:
    fired = op.advance(2**62)
    if fired is not None:
        out.append(fired)
    return pl.concat(out)


def assert_same(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert got.schema == want.schema
    assert got.height == want.height > 0
    for name in got.columns:
        if got[name].dtype.is_float():
            assert got[name].is_null().to_list() == want[name].is_null().to_list()
            assert got[name].drop_nulls().to_numpy() == pytest.approx(
                want[name].drop_nulls().to_numpy(), nan_ok=True
            )
        else:
            assert got[name].to_list() == want[name].to_list(), name


@pytest.mark.parametrize(
    ("window", "keys", "top", "key_span", "batch_rows"),
    [
        (Sliding(10_000, 2_000), ("key",), None, 300, 1_000),
        (Sliding(10_000, 2_000), ("key",), TopN("n"), 300, 1_000),
        (Sliding(10_000, 5_000), ("key",), TopN("total", n=3), 300, 7),
        (Tumbling(5_000), ("key",), TopN("avg", n=2, descending=False), 300, 10_000),
        (Tumbling(5_000), ("key",), TopN("lo"), 300, 500),
        (Sliding(6_000, 3_000), (), None, 300, 333),
        (Sliding(10_000, 2_000), ("key",), TopN("n"), 10**9, 1_000),  # sparse: sort path
    ],
)
@pytest.mark.parametrize("seed", [1, 2])
def test_array_store_equals_the_polars_store(window, keys, top, key_span, batch_rows, seed):
    df = events(seed, key_span=key_span)
    arrays, frames = (
        operator(window, keys, top=top),
        operator(window, keys, top=top, frames_only=True),
    )
    got = finish(arrays, drive(arrays, df, batch_rows))
    want = finish(frames, drive(frames, df, batch_rows))
    assert isinstance(arrays._store, ArrayPanes) and isinstance(frames._store, FramePanes)
    assert_same(got, want)
    assert arrays.state_rows() == frames.state_rows() == 0  # every pane evicted


def test_a_batch_the_arrays_cannot_take_moves_the_state_to_frames():
    df = events(3)
    nulls = df.with_columns(pl.lit(None, pl.Int64).alias("key")).slice(2_000, 50)
    spliced = pl.concat([df.slice(0, 2_000), nulls, df.slice(2_050)])
    op, reference = (
        operator(Sliding(10_000, 2_000)),
        operator(Sliding(10_000, 2_000), frames_only=True),
    )
    out = drive(op, spliced.slice(0, 2_000), 500)
    assert isinstance(op._store, ArrayPanes)
    out += drive(op, spliced, 500, start=2_000)
    assert isinstance(op._store, FramePanes)  # and it stays there
    assert_same(finish(op, out), finish(reference, drive(reference, spliced, 500)))


def test_nan_in_a_min_column_is_left_to_polars():
    df = events(4).with_columns(
        pl.when(pl.col("key") == 5).then(float("nan")).otherwise(pl.col("price")).alias("price")
    )
    aggs = [min_("price", "cheapest"), count("n")]
    op = operator(Tumbling(5_000), aggs=aggs)
    reference = operator(Tumbling(5_000), aggs=aggs, frames_only=True)
    got = finish(op, drive(op, df, 1_000))
    assert isinstance(op._store, FramePanes)
    assert_same(got, finish(reference, drive(reference, df, 1_000)))


@pytest.mark.parametrize("cut", [1_500, 2_777])
def test_array_state_survives_snapshot_and_restore(cut):
    df = events(5)
    window, top = Sliding(10_000, 2_000), TopN("n")
    whole = operator(window, top=top)
    want = finish(whole, drive(whole, df, 500))

    first = operator(window, top=top)
    out = drive(first, df.slice(0, cut), 500)
    state = first.snapshot()
    assert isinstance(first._store, ArrayPanes) and "panes" in state
    second = operator(window, top=top)
    second.restore(state)
    assert second.state_rows() == first.state_rows()
    out += drive(second, df, 500, start=cut)
    assert isinstance(second._store, ArrayPanes)  # moved back after the restore
    assert_same(finish(second, out), want)


@pytest.mark.parametrize("dtype", [pl.UInt64, pl.String])
def test_keys_the_arrays_cannot_hold_use_the_polars_store(dtype):
    df = events(6)
    window, top = Sliding(10_000, 2_000), TopN("total", n=2)
    ints = operator(window, top=top)
    want = finish(ints, drive(ints, df, 700))
    other = operator(window, top=top)
    got = finish(other, drive(other, df.with_columns(pl.col("key").cast(dtype)), 700))
    assert isinstance(ints._store, ArrayPanes) and isinstance(other._store, FramePanes)
    # String keys sort as text: compare in the integer order.
    got = got.with_columns(pl.col("key").cast(pl.Int64)).sort("window_start", "key")
    assert_same(got, want)


def test_restored_state_with_a_null_key_stays_in_the_polars_store():
    df = events(8)
    nulls = df.slice(1_000, 40).with_columns(pl.lit(None, pl.Int64).alias("key"))
    head, tail = pl.concat([df.slice(0, 1_000), nulls]), df.slice(1_040)
    whole = operator(Sliding(10_000, 2_000))  # the same batches, without the restart
    want = finish(whole, drive(whole, head, 500) + drive(whole, tail, 500))

    first = operator(Sliding(10_000, 2_000))
    out = drive(first, head, 500)
    second = operator(Sliding(10_000, 2_000))
    second.restore(first.snapshot())
    out += drive(second, tail, 500)
    assert isinstance(second._store, FramePanes)
    assert_same(finish(second, out), want)


def long_window_events(seed: int, n: int = 6_000) -> pl.DataFrame:
    """Events of one long window whose keys keep coming: a few hot keys, many new keys
    that arrive in no particular order (so they go in the middle of a held pane, not
    only at its end), as auctions do in a day's window."""
    rng = np.random.default_rng(seed)
    df = events(seed, n=n, key_span=40)
    fresh = rng.permutation(n)[:n] * 3 + rng.integers(0, 3, n)  # mostly new, unordered
    hot = rng.random(n) < 0.3
    return df.with_columns(pl.Series("key", np.where(hot, df["key"].to_numpy(), fresh)))


@pytest.fixture(params=["sorted", "indexed"])
def held_panes(request, monkeypatch):
    """How a held pane takes new keys in the middle: merged into its sorted tail, or (no
    tail allowance) indexed from the first such batch on, new keys appended. Rooms of
    any size get their next one made ahead on the merge thread."""
    monkeypatch.setattr(pane_stores, "SPARE_ROOM", 0)
    if request.param == "indexed":
        monkeypatch.setattr(ArrayPanes, "TAIL_FACTOR", 0)
        monkeypatch.setattr(ArrayPanes, "TAIL_SLACK", 0)
    return request.param


def _indexed(op: WindowAggregate) -> bool:
    return any(pane.index is not None for pane in op._store._panes.values())


@pytest.mark.parametrize("batch_rows", [1, 7, 250, 6_000])
def test_a_held_pane_changed_in_place_equals_the_polars_store(batch_rows, held_panes):
    df = long_window_events(9, n=1_500 if batch_rows == 1 else 6_000)
    window = Tumbling(10**7)  # one window holds everything until the end
    arrays, frames = operator(window), operator(window, frames_only=True)
    out = drive(arrays, df, batch_rows)
    assert _indexed(arrays) == (held_panes == "indexed" and batch_rows < df.height)
    got = finish(arrays, out)
    want = finish(frames, drive(frames, df, batch_rows))
    assert isinstance(arrays._store, ArrayPanes)
    assert_same(got, want)


@pytest.mark.parametrize("key_span", [300, 10**9])
def test_indexed_panes_of_sliding_windows_equal_the_polars_store(monkeypatch, key_span):
    monkeypatch.setattr(ArrayPanes, "TAIL_FACTOR", 0)
    monkeypatch.setattr(ArrayPanes, "TAIL_SLACK", 0)
    df = events(4, n=8_000, key_span=key_span)
    window = Sliding(10_000, 2_000)
    arrays, frames = (
        operator(window, top=TopN("n")),
        operator(window, top=TopN("n"), frames_only=True),
    )
    assert_same(finish(arrays, drive(arrays, df, 300)), finish(frames, drive(frames, df, 300)))


@pytest.mark.parametrize("failed_at", [500, 2_000, 4_500])
def test_a_failed_batch_leaves_no_trace_in_a_held_pane(failed_at, held_panes):
    """``mark`` before every batch (as the runner's savepoint); one batch, with new keys
    all over the held pane's range and past its room, is undone by ``reset``: the state
    is as before and the output as if the batch never came. A snapshot taken before
    does not change when the pane is then changed in place."""
    df = long_window_events(10)
    extra = long_window_events(11, n=3_000)
    window = Tumbling(10**7)
    reference = operator(window, frames_only=True)
    want = finish(reference, drive(reference, df, 500))
    op = operator(window)
    for offset in range(0, df.height, 500):
        batch = df.slice(offset, 500)
        if offset == failed_at:
            mark = op._store.mark()
            kept = op.snapshot()["panes"]
            rows = kept.to_pylist()
            op.process(pl.concat([batch, extra]))
            assert op.state_rows() > kept.num_rows
            op._store.reset(mark)
            assert op.snapshot()["panes"].to_pylist() == rows
            op.process(batch)
            assert op.snapshot()["panes"].to_pylist() != rows
            assert kept.to_pylist() == rows  # the earlier snapshot did not move
        else:
            if op._store is not None:
                op._store.mark()
            op.process(batch)
    assert isinstance(op._store, ArrayPanes)
    assert_same(finish(op, []), want)


DISTINCT = [count("n"), count_distinct("value", "values"), count_distinct("price", "prices")]


def distinct_truth(df: pl.DataFrame, size: int) -> pl.DataFrame:
    ws = pl.col("date_time").dt.epoch("ms") // size * size
    return (
        df.group_by(ws.alias("ws"), "key")
        .agg(
            pl.len().alias("n"),
            pl.col("value").drop_nulls().n_unique().alias("values"),
            pl.col("price").n_unique().alias("prices"),
        )
        .sort("ws", "key")
    )


def as_distinct(got: pl.DataFrame) -> pl.DataFrame:
    return got.select(
        pl.col("window_start").dt.epoch("ms").alias("ws"), "key", "n", "values", "prices"
    ).sort("ws", "key")


@pytest.mark.parametrize("batch_rows", [1, 7, 100, 6_000])
def test_exact_distinct_counts_do_not_depend_on_the_batch_size(batch_rows):
    """Distinct values are merged whenever the new partials outgrow half of the
    merged ones: any batch size gives the exact counts."""
    df = long_window_events(12, n=1_200 if batch_rows == 1 else 6_000)
    # One window for (nearly) everything; a few windows. Events in order: the driver's
    # watermark is 2 s behind, less than their disorder (at T0, a window boundary).
    for size in (10**7, 20_000):
        op = operator(Tumbling(size), aggs=DISTINCT)
        got = finish(op, drive(op, df.sort("date_time"), batch_rows))
        assert isinstance(op._store, FramePanes)
        want = distinct_truth(df, size)
        assert as_distinct(got).equals(want.cast(as_distinct(got).schema))


@pytest.mark.parametrize("cut", [777, 3_100])
def test_exact_distinct_state_survives_restore_and_rollback(cut):
    df = long_window_events(13).sort("date_time")
    window = Tumbling(10**7)
    first = operator(window, aggs=DISTINCT)
    out = drive(first, df.slice(0, cut), 100)
    second = operator(window, aggs=DISTINCT)
    second.restore(first.snapshot())
    for offset in range(cut, df.height, 100):
        mark = second._store.mark()
        second.process(pl.concat([df.slice(offset, 100), long_window_events(14, n=300)]))
        second._store.reset(mark)  # a failed batch: gone
        second.process(df.slice(offset, 100))
    got = finish(second, out)
    want = distinct_truth(df, 10**7)
    assert as_distinct(got).equals(want.cast(as_distinct(got).schema))


class _Lazy(Future):
    """A merge that runs when the test says (``LazyExecutor.run_all``) or when the store
    waits for it (firing or checkpointing a pane), whichever comes first."""

    def __init__(self, fn, args) -> None:
        super().__init__()
        self._call = (fn, args)

    def run(self) -> None:
        if not self.done():
            fn, args = self._call
            self.set_result(fn(*args))

    def result(self, timeout=None):
        self.run()
        return super().result(timeout)


class LazyExecutor(Executor):
    def __init__(self) -> None:
        self.queue: list[_Lazy] = []

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future = _Lazy(fn, args)
        self.queue.append(future)
        return future

    def run_all(self) -> None:
        while self.queue:
            self.queue.pop(0).run()


# Background merges of FramePanes: merges that finish at any point between batches (or
# not before the window fires), batches rolled back before or after a merge was
# submitted, against the same store merging on the batch thread.
_frame_steps = st.lists(
    st.one_of(
        st.tuples(st.just("batch"), st.integers(0, 10**6)),
        st.tuples(st.sampled_from(["mark", "reset", "merges", "fire", "restore"]), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=80, deadline=None)
@given(steps=_frame_steps)
def test_frame_panes_merging_in_the_background_equal_merging_in_line(steps):
    slide = 20_000  # events span ~60 s: 3-4 panes, windows of two
    aggs = [count("n"), count_distinct("value", "values"), sum_("price", "total")]
    pool = LazyExecutor()
    background = FramePanes(["key"], aggs, background=0, executor=pool)
    inline = FramePanes(["key"], aggs, background=10**12)
    background.MAX_FRAMES = inline.MAX_FRAMES = 2
    marks = None

    def fired(store: FramePanes) -> pl.DataFrame | None:
        return store.fire(sorted(store.starts()), 2 * slide, slide, None)

    for number, (step, seed) in enumerate(steps):
        if step == "batch":
            df = events(seed + number, n=50, key_span=6)
            background.add(df, "date_time", slide)
            inline.add(df, "date_time", slide)
        elif step == "mark":
            marks = (background.mark(), inline.mark())
        elif step == "reset" and marks is not None:
            background.reset(marks[0])
            inline.reset(marks[1])
            marks = None
        elif step == "merges":
            pool.run_all()
        elif step == "fire":
            got, want = fired(background), fired(inline)
            assert (got is None) == (want is None)
            if got is not None:
                assert got.equals(want)
        elif step == "restore":
            frame = background.to_frame()
            assert (frame is None) == (inline.to_frame() is None)
            background = FramePanes(["key"], aggs, background=0, executor=pool)
            background.MAX_FRAMES = 2
            if frame is not None:
                background.load(frame)
            marks = None
    pool.run_all()
    got, want = fired(background), fired(inline)
    assert (got is None) == (want is None)
    if got is not None:
        assert got.equals(want)
