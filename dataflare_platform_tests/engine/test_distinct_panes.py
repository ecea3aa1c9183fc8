"""Exact distinct counts of tumbling windows from code sets (``DistinctPanes``) must equal
the Polars store's (``FramePanes``, value lists) for any batching, key type and failure,
and the code set must behave as a set (a model check with hypothesis)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflare_platform.engine.aggregations import count, count_distinct, max_
from dataflare_platform.engine.operators.code_sets import CodeSet
from dataflare_platform.engine.operators.distinct_panes import VALUE_BIAS, DistinctPanes
from dataflare_platform.engine.operators.pane_stores import FramePanes
from dataflare_platform.engine.operators.windows import TopN, Tumbling
from dataflare_platform_tests.engine.test_pane_stores import drive, finish, operator

T0 = 1_700_000_000_000
AGGS = [
    count("n"),
    count_distinct("bidder", "bidders"),
    count_distinct("low_bidder", "low_bidders"),
    count_distinct("auction", "auctions"),
    max_("date_time", "last"),
]


def bids(seed: int, n: int = 5_000, keys: int = 40, disorder: int = 1_500) -> pl.DataFrame:
    """Bids over ~60 s, out of order by up to ``disorder`` ms, with repeated bidders and
    auctions, a ``low_bidder`` that is null for high prices (a ``FILTER``), string and
    integer keys with some nulls."""
    rng = np.random.default_rng(seed)
    times = T0 + np.sort(rng.integers(0, 60_000, n)) + rng.integers(-disorder, disorder + 1, n)
    bidder = rng.integers(0, 300, n)
    price = rng.integers(0, 100, n)
    channel = pl.Series([f"ch-{k}" for k in rng.integers(0, keys, n)])
    return pl.DataFrame(
        {
            "channel": channel.set(pl.Series(rng.random(n) < 0.05), None),
            "shop": rng.integers(0, keys, n),
            "bidder": bidder,
            "low_bidder": pl.Series(bidder).set(pl.Series(price >= 50), None),
            "auction": rng.integers(-(10**6), 10**6, n) // 997,
            "date_time": pl.Series(times).cast(pl.Datetime("ms")),
        }
    )


def both(window, keys, aggs=AGGS, top=None):
    return operator(window, keys, aggs, top), operator(window, keys, aggs, top, frames_only=True)


def assert_equal(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert got.height == want.height > 0
    assert got.equals(want), (got, want)


@pytest.mark.parametrize(
    ("keys", "batch_rows", "size", "top"),
    [
        (("shop",), 1, 10_000, None),
        (("shop",), 37, 10**7, None),
        (("channel",), 7, 10_000, None),
        (("channel",), 100, 10**7, None),
        (("channel",), 6_000, 20_000, TopN("bidders", n=3)),
        (("shop", "channel"), 250, 10_000, None),
        (("shop",), 100_000, 5_000, None),
    ],
)
def test_code_sets_equal_value_lists(keys, batch_rows, size, top):
    df = bids(1, n=800 if batch_rows == 1 else 5_000)
    sets, lists = both(Tumbling(size), keys, top=top)
    got = finish(sets, drive(sets, df, batch_rows))
    want = finish(lists, drive(lists, df, batch_rows))
    assert isinstance(sets._store, DistinctPanes) and isinstance(lists._store, FramePanes)
    assert_equal(got, want)
    assert sets.state_rows() == 0  # every pane evicted


@pytest.mark.parametrize("cut", [333, 2_900])
def test_state_survives_snapshot_restore_and_rollback(cut):
    """A checkpoint (in the value-list shape) restores into code sets; a failed batch
    (with new groups and values) is rolled back without a trace."""
    df = bids(3).sort("date_time")
    window = Tumbling(10**7)
    _, reference = both(window, ("channel",))
    want = finish(reference, drive(reference, df, 100))
    first = operator(window, ("channel",), AGGS)
    out = drive(first, df.slice(0, cut), 100)
    assert isinstance(first._store, DistinctPanes)
    second = operator(window, ("channel",), AGGS)
    second.restore(first.snapshot())
    for offset in range(cut, df.height, 100):
        saved = second.savepoint()
        second.process(pl.concat([df.slice(offset, 100), bids(4, n=300)]))
        second.rollback(saved)
        second.process(df.slice(offset, 100))
    assert isinstance(second._store, DistinctPanes)
    assert_equal(finish(second, out), want)


def test_snapshot_is_the_value_list_shape():
    df = bids(5)
    sets, lists = both(Tumbling(10**7), ("channel",))
    drive(sets, df, 700)
    drive(lists, df, 700)
    got, want = (pl.from_arrow(op.snapshot()["panes"]) for op in (sets, lists))
    order = ["channel", "__pane"]
    got = got.with_columns(pl.col(pl.List(pl.Int64)).list.sort()).sort(order)
    want = want.with_columns(pl.col(pl.List(pl.Int64)).list.sort()).sort(order)
    assert got.schema == want.schema
    assert got.equals(want)


@pytest.mark.parametrize(
    "spoiler",
    [
        pl.lit("x").alias("bidder"),  # strings
        pl.lit(VALUE_BIAS, pl.Int64).alias("auction"),  # beyond the code's value bits
    ],
)
def test_a_batch_the_codes_cannot_take_moves_the_state_to_frames(spoiler):
    df = bids(6).sort("date_time")
    spoilt = df.slice(2_000, 50).with_columns(spoiler)
    aggs = [count("n"), count_distinct("bidder", "bidders"), count_distinct("auction", "a")]
    op, reference = both(Tumbling(10**7), ("channel",), aggs)
    outs = []
    for each in (op, reference):
        out = drive(each, df.slice(0, 2_000), 500)
        assert isinstance(each._store, DistinctPanes if each is op else FramePanes)
        each.process(spoilt)
        out += drive(each, df, 500, start=2_050)
        outs.append(finish(each, out))
    assert isinstance(op._store, FramePanes)  # and it stays there
    assert_equal(*outs)


def test_windows_without_keys_keep_value_lists():
    """One list per aggregate: Polars merges those faster than the code sets."""
    op = operator(Tumbling(10_000), (), AGGS)
    drive(op, bids(9), 500)
    assert isinstance(op._store, FramePanes)


def test_sliding_windows_keep_value_lists():
    """A sliding window's distinct count is not a sum over its panes."""
    from dataflare_platform.engine.operators.windows import Sliding

    op = operator(Sliding(10_000, 5_000), ("channel",), AGGS)
    drive(op, bids(7), 500)
    assert isinstance(op._store, FramePanes)


# -- the code set against a Python set ---------------------------------------------------

codes_batches = st.lists(
    st.tuples(
        st.lists(st.integers(-(2**62), 2**62) | st.integers(0, 300), max_size=60),
        st.booleans(),  # roll this batch back
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(batches=codes_batches, background=st.sampled_from([None, 4, 16]))
def test_code_set_is_a_set(batches, background):
    with ThreadPoolExecutor(max_workers=1) as pool:
        held = CodeSet(background=background, executor=pool)
        model: set[int] = set()
        for values, fail in batches:
            codes = np.unique(np.array(values, dtype=np.int64))
            saved = held.savepoint()
            new = held.add(codes)
            assert new.tolist() == [c not in model for c in codes.tolist()]
            if fail:
                held.rollback(saved)
            else:
                model.update(codes.tolist())
            assert len(held) == len(model)
            assert held.codes().tolist() == sorted(model)
        held.wait()
        assert held.codes().tolist() == sorted(model)
        assert held.runs <= 2 + int(np.log2(max(len(model), 1))) + 1


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", None]), st.integers(0, 20) | st.none(), st.integers(0, 3)
        ),
        min_size=1,
        max_size=120,
    ),
    batch_rows=st.integers(1, 50),
)
def test_distinct_panes_match_a_model(rows, batch_rows):
    """Any rows (nulls in keys and values, several windows) in any batching: per window
    and key, the number of distinct non-null values."""
    df = pl.DataFrame(
        {
            "channel": [r[0] for r in rows],
            "bidder": pl.Series([r[1] for r in rows], dtype=pl.Int32),
            "date_time": pl.Series([T0 + r[2] * 1_000 for r in rows]).cast(pl.Datetime("ms")),
        }
    ).sort("date_time")
    aggs = [count_distinct("bidder", "bidders")]
    op = operator(Tumbling(2_000), ("channel",), aggs)
    out = []
    for offset in range(0, df.height, batch_rows):
        op.process(df.slice(offset, batch_rows))
    fired = op.advance(2**62)
    if fired is not None:
        out.append(fired)
    assert isinstance(op._store, DistinctPanes)
    got = pl.concat(out).select(
        pl.col("window_start").dt.epoch("ms").alias("ws"), "channel", "bidders"
    )
    want = df.group_by(
        (pl.col("date_time").dt.epoch("ms") // 2_000 * 2_000).alias("ws"), "channel"
    ).agg(pl.col("bidder").drop_nulls().n_unique().cast(pl.Int64).alias("bidders"))
    order = ["ws", "channel"]
    assert got.sort(order, nulls_last=True).equals(want.sort(order, nulls_last=True))


def test_a_pane_whose_groups_outgrow_the_tag_bits_moves_to_frames(monkeypatch):
    """Groups gather in a pane batch after batch: once they (times the distinct
    aggregates) would not fit the codes' tag bits, the state moves to frames, exact."""
    from dataflare_platform.engine.operators import distinct_panes

    monkeypatch.setattr(distinct_panes, "MAX_TAGS", 150)  # the limit only, not the layout
    df = bids(8, keys=90).sort("date_time")
    aggs = [count("n"), count_distinct("bidder", "bidders"), count_distinct("auction", "a")]
    op, reference = both(Tumbling(10**7), ("channel",), aggs)
    out = drive(op, df.slice(0, 40), 20)
    assert isinstance(op._store, DistinctPanes)
    out += drive(op, df, 20, start=40)
    assert isinstance(op._store, FramePanes)
    assert_equal(finish(op, out), finish(reference, drive(reference, df, 20)))


def test_savepoints_and_rollbacks_with_lookups_in_flight():
    """The check thread held up: a batch's lookups queue, a savepoint queues its read of
    the runs behind them, a failing batch's lookups queue after that; the rollback waits
    for them all and puts back the runs as of the savepoint, with the lookups that were
    pending then. Windows fire exactly as the value lists' do."""
    df = bids(6).sort("date_time")
    window = Tumbling(20_000)
    _, reference = both(window, ("channel",))
    want = finish(reference, drive(reference, df, 250))
    gate = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        op = operator(window, ("channel",), AGGS)
        out = drive(op, df.slice(0, 500), 250)
        assert isinstance(op._store, DistinctPanes)
        op._store.checker = pool
        in_flight = []
        for offset in range(500, df.height, 500):
            gate.clear()
            pool.submit(gate.wait, 60)
            op.process(df.slice(offset, 250))
            saved = op.savepoint()
            in_flight.append(sum(len(p.checks) for p in op._store._panes.values()))
            op.process(pl.concat([df.slice(offset + 250, 250), bids(7, n=300)]))
            gate.set()
            op.rollback(saved)
            op.process(df.slice(offset + 250, 250))
            fired = op.advance(
                int(df["date_time"].dt.epoch("ms")[min(offset + 499, df.height - 1)])
            )
            if fired is not None:
                out.append(fired)
        assert min(in_flight) >= 1  # every savepoint was taken with a lookup pending
        assert_equal(finish(op, out), want)
