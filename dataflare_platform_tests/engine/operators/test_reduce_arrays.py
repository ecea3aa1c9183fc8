"""Reduce's numpy arrays (one integer key, integer values) against its Polars path (the
KeyedStore) as the model: the same output for every batch, the same checkpoint frame,
rollbacks to a savepoint and restores (of either path's checkpoint) at any batch, and a
batch with a null key moving the state to the Polars path for good."""

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflare_platform.engine import count, max_, mean, min_, sum_
from dataflare_platform.engine.operators.keyed import Reduce
from dataflare_platform.engine.operators.reduce_arrays import supported

AGGS = [
    count("n"),
    count("priced", column="price"),
    sum_("price", "total"),
    mean("price", "avg"),
    min_("price", "lo"),
    max_("small", "hi"),
]


def make(arrays: bool) -> Reduce:
    op = Reduce(["category"], AGGS)
    if not arrays:
        op._arrays_ok = False  # the Polars path, for good
    return op


def batch(seed: int, rows: int, null_key: bool = False) -> pl.DataFrame:
    """Few keys, prices with nulls, a narrow column. Two in three seeds take small
    non-negative keys (the direct-address table), the others some negative or large keys
    (the sorted map, for good from then on)."""
    rng = np.random.default_rng(seed)
    keys = rng.choice(np.arange(50) if seed % 3 else np.array([-3, 0, 1, 2, 7, 10**12]), rows)
    price = rng.integers(-(2**40), 2**40, rows)
    frame = pl.DataFrame(
        {
            "category": keys,
            "price": pl.Series(price).scatter(np.flatnonzero(rng.random(rows) < 0.3), None),
            "small": pl.Series(rng.integers(0, 100, rows), dtype=pl.Int16),
        }
    )
    if null_key:
        frame = frame.with_columns(
            pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise("category").alias("category")
        )
    return frame


def canonical(frame: pl.DataFrame | None) -> pl.DataFrame | None:
    return None if frame is None else frame.sort("category")


def same(a: pl.DataFrame | None, b: pl.DataFrame | None) -> None:
    if a is None or b is None:
        assert a is None and b is None
        return
    a, b = canonical(a), canonical(b)
    assert a.schema == b.schema
    assert a.equals(b, null_equal=True)


def state(op: Reduce) -> pl.DataFrame | None:
    snap = op.snapshot()
    return pl.from_arrow(snap["partials"]) if "partials" in snap else None


# Each step: a batch (seed, rows), "save" (a savepoint), "back" (roll back to it),
# "restore" (checkpoint into a fresh operator), or a batch with a null key.
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("batch"), st.integers(0, 10**6), st.integers(1, 40)),
        st.tuples(st.sampled_from(["save", "back", "restore", "null"]), st.just(0), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(steps=_steps)
def test_arrays_match_the_polars_path(steps):
    fast, model = make(True), make(False)
    saved = None
    for number, (step, seed, rows) in enumerate(steps):
        if step == "batch" or step == "null":
            frame = batch(seed + number, rows or 5, null_key=step == "null")
            got, _ = fast.process(frame)
            want, _ = model.process(frame)
            same(got, want)
        elif step == "save":
            saved = (fast.savepoint(), model.savepoint())
        elif step == "back" and saved is not None:
            fast.rollback(saved[0])
            model.rollback(saved[1])
            saved = None  # a savepoint is rolled back to once, as the runner does
        elif step == "restore":
            snap = fast.snapshot()
            fast = make(True)
            fast.restore(snap)
            saved = None
        same(state(fast), state(model))
        assert fast.state_rows() == model.state_rows()


def test_the_arrays_take_the_batches_they_are_exact_for():
    frame = batch(1, 50)
    op = make(True)
    op.process(frame)
    assert op._arrays is not None and op._store.rows == 0
    # A null key moves the partials to the KeyedStore, for good.
    op.process(batch(2, 10, null_key=True))
    assert op._arrays is None and op._store.rows > 0
    op.process(frame)
    assert op._arrays is None


@pytest.mark.parametrize(
    ("schema", "aggs", "ok"),
    [
        ({"k": pl.Int64, "v": pl.Int64}, [mean("v", "m")], True),
        ({"k": pl.UInt64, "v": pl.Int64}, [mean("v", "m")], False),
        ({"k": pl.String, "v": pl.Int64}, [mean("v", "m")], False),
        ({"k": pl.Int64, "v": pl.Float64}, [sum_("v", "s")], False),
        ({"k": pl.Int64, "v": pl.Int32}, [sum_("v", "s")], False),  # a 32-bit sum wraps
        ({"k": pl.Int64, "v": pl.Int32}, [max_("v", "m")], True),
    ],
)
def test_only_exact_cases_take_the_arrays(schema, aggs, ok):
    assert supported(["k"], aggs, schema) is ok


def test_a_polars_path_checkpoint_restores_into_the_arrays():
    """A checkpoint written by the Polars path (as every earlier version wrote it) is
    loaded into the arrays by the first batch, and the output goes on the same."""
    model = make(False)
    for seed in range(3):
        model.process(batch(seed, 30))
    fast = make(True)
    fast.restore(model.snapshot())
    for seed in range(3, 6):
        got, _ = fast.process(batch(seed, 30))
        want, _ = model.process(batch(seed, 30))
        same(got, want)
    assert fast._arrays is not None
    same(state(fast), state(model))
