"""The numpy union of distinct lists gives, per group, the values Polars' ``explode()
.drop_nulls().unique()`` gives (as sets), for any integer type, nulls inside and for whole
lists, empty lists, lists spread over chunks, and refuses what does not pack; the
first-appearance numbering of ``FramePanes`` matches Polars' ``maintain_order`` groups."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflare_platform.engine.operators.distinct_lists import union_by_group
from dataflare_platform.engine.operators.pane_stores import _first_appearance

DTYPES = [pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32]


def expected(lists: pl.Series, group: np.ndarray, groups: int) -> list[set]:
    frame = pl.DataFrame({"g": group, "v": lists})
    sets = [set() for _ in range(groups)]
    for g, values in frame.iter_rows():
        sets[g] |= {v for v in (values or []) if v is not None}
    return sets


def bounds(dtype: pl.DataType) -> tuple[int, int]:
    info = np.iinfo(str(dtype).lower())  # pl.Int8 -> 'int8'
    return int(info.min), int(info.max)


@st.composite
def cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    low, high = bounds(dtype)
    value = st.one_of(st.none(), st.integers(low, high), st.integers(max(low, -3), min(high, 3)))
    rows = draw(st.lists(st.one_of(st.none(), st.lists(value, max_size=8)), max_size=12))
    groups = draw(st.integers(1, 4))
    group = draw(st.lists(st.integers(0, groups - 1), min_size=len(rows), max_size=len(rows)))
    chunks = draw(st.integers(1, 3))
    return dtype, rows, np.array(group, dtype=np.int64), groups, chunks


@settings(max_examples=300, deadline=None)
@given(case=cases())
def test_union_equals_polars_per_group(case):
    dtype, rows, group, groups, chunks = case
    series = pl.Series("v", rows, dtype=pl.List(dtype))
    if chunks > 1 and len(rows) > 1:  # several chunks, as a concat of a pane's frames
        cut = np.array_split(np.arange(len(rows)), chunks)
        series = pl.concat(
            [series[int(c[0]) : int(c[-1]) + 1] for c in cut if len(c)], rechunk=False
        )
    got = union_by_group(series, group, groups)
    if got is None:  # only when group and value ranges need more than 63 bits
        values = [v for r in rows for v in (r or []) if v is not None]
        span = max(values) - min(values)
        assert span.bit_length() + (groups - 1).bit_length() > 63
        return
    assert got.dtype == series.dtype
    assert len(got) == groups
    lists = got.to_list()
    assert [set(v) for v in lists] == expected(series, group, groups)
    for values in lists:  # distinct, ascending
        assert values == sorted(set(values))


def test_one_group_of_values_63_bits_apart_keeps_them():
    """Found by Hypothesis: the end of the last group, ``groups << 63``, overflowed."""
    lists = pl.Series("v", [[0, 2**62], [2**62, 5]], dtype=pl.List(pl.Int64))
    got = union_by_group(lists, np.array([0, 0]), 1)
    assert got.to_list() == [[0, 5, 2**62]]


def test_values_that_do_not_pack_are_refused_not_wrapped():
    extreme = pl.Series("v", [[-(2**63), 2**63 - 1]], dtype=pl.List(pl.Int64))
    assert union_by_group(extreme, np.zeros(1, np.int64), 1) is None
    # a range that fits alone but not with three bits of groups
    wide = pl.Series("v", [[0], [2**61]] * 4, dtype=pl.List(pl.Int64))
    assert union_by_group(wide, np.arange(8, dtype=np.int64), 8) is None
    assert union_by_group(wide, np.zeros(8, np.int64), 1).to_list() == [[0, 2**61]]


@pytest.mark.parametrize(
    "dtype", [pl.List(pl.UInt64), pl.List(pl.String), pl.List(pl.Float64), pl.Int64]
)
def test_other_types_are_left_to_polars(dtype):
    empty = pl.Series("v", [], dtype=dtype)
    assert union_by_group(empty, np.zeros(0, np.int64), 1) is None


def test_no_values_give_empty_lists_per_group():
    series = pl.Series("v", [None, [], [None]], dtype=pl.List(pl.Int32))
    got = union_by_group(series, np.array([0, 1, 1]), 3)
    assert got.dtype == pl.List(pl.Int32)
    assert got.to_list() == [[], [], []]


@settings(max_examples=200, deadline=None)
@given(
    keys=st.one_of(
        st.lists(st.one_of(st.none(), st.integers(-5, 5)), min_size=1, max_size=30),
        st.lists(
            st.one_of(st.none(), st.sampled_from(["a", "b", "", "ch-1"])), min_size=1, max_size=30
        ),
        st.lists(st.one_of(st.none(), st.booleans()), min_size=1, max_size=30),
    )
)
def test_first_appearance_numbers_rows_in_maintain_order_group_order(keys):
    frame = pl.DataFrame({"k": keys})
    groups = frame.group_by("k", maintain_order=True).agg(pl.len())
    got = _first_appearance(frame, ["k"], groups.height)
    if frame.get_column("k").dtype == pl.Null:  # all null: no type to encode, Polars does it
        assert got is None
        return
    assert got is not None
    order = groups.get_column("k").to_list()
    assert [order[g] for g in got] == keys


def test_first_appearance_declines_what_it_cannot_number():
    frame = pl.DataFrame({"a": [1, 2], "b": [1.5, 2.5]})
    assert _first_appearance(frame, ["a", "b"], 2) is None  # several keys
    assert _first_appearance(frame, ["b"], 2) is None  # float keys (-0.0, NaN)
    assert _first_appearance(frame, ["a"], 3) is None  # not the group-by's count


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    keys=st.sampled_from([[], ["k"], ["name"], ["k", "name"]]),
    batches=st.integers(1, 12),
)
def test_frame_panes_merges_count_what_a_group_by_of_all_rows_counts(seed, keys, batches):
    """Every merge in line (``MAX_FRAMES`` 1) through the numpy union (integer values),
    Polars (string values) and the group numbering (one key) or its fallback (two)."""
    from dataflare_platform.engine.aggregations import count, count_distinct, max_
    from dataflare_platform.engine.operators.pane_stores import FramePanes

    rng = np.random.default_rng(seed)
    aggs = [count("n"), count_distinct("v"), count_distinct("s"), max_("v", "top")]
    store = FramePanes(keys, aggs, background=10**12)
    store.MAX_FRAMES, store.GROWTH = 1, 10**6
    parts = []
    for _ in range(batches):
        n = int(rng.integers(1, 40))
        part = pl.DataFrame(
            {
                "k": pl.Series(rng.integers(-2, 3, n)).set(pl.Series(rng.random(n) < 0.1), None),
                "name": rng.choice(["a", "b", "c"], n),
                "v": pl.Series(rng.integers(-(2**40), 2**40, n) // int(rng.integers(1, 2**39))).set(
                    pl.Series(rng.random(n) < 0.2), None
                ),
                "s": rng.choice(["x", "y", "zz", "w"], n),
                "t": pl.Series(np.full(n, 1_000), dtype=pl.Int64).cast(pl.Datetime("ms")),
            }
        )
        store.add(part, "t", 60_000)
        parts.append(part)
    fired = store.fire([0], 60_000, 60_000, None)
    rows = pl.concat(parts)
    want = (rows.group_by(keys) if keys else rows.group_by(pl.lit(0).alias("__all"))).agg(
        pl.len().alias("n"),
        pl.col("v").drop_nulls().n_unique().alias("distinct_v"),
        pl.col("s").n_unique().alias("distinct_s"),
        pl.col("v").max().alias("top"),
    )
    columns = ["n", "distinct_v", "distinct_s", "top"]
    got = fired.select(*keys, *columns).sort(keys or columns, nulls_last=True)
    want = want.select(*keys, *columns).sort(keys or columns, nulls_last=True)
    assert got.cast({c: pl.Int64 for c in columns}).equals(
        want.cast({c: pl.Int64 for c in columns})
    )
