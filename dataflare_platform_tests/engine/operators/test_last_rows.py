"""ReduceLast's numpy rings (last_rows.py) against a plain Python model of "the last n
rows per key": every sequence of batches, failed batches rolled back, checkpoint round
trips, keys too sparse for the direct-address table and a null key (which moves the
state to the KeyedStore) gives the model's aggregates, row for row."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflare_platform.engine.aggregations import Agg
from dataflare_platform.engine.operators.keyed import ReduceLast
from dataflare_platform.engine.operators.last_rows import LastRowsRing, supported

AGGS = [
    Agg("mean", "v", "avg"),
    Agg("sum", "v", "total"),
    Agg("min", "v", "low"),
    Agg("max", "v", "high"),
    Agg("count", "v", "values"),
    Agg("count", None, "rows"),
]
SCHEMA = {"k": pl.Int64, "t": pl.Datetime("ms"), "v": pl.Int64}

row = st.tuples(
    st.integers(0, 5),  # key (index into the keys of the example)
    st.one_of(st.none(), st.integers(0, 50)),  # t
    st.one_of(st.none(), st.integers(-1000, 1000)),  # v
)
step = st.one_of(
    st.tuples(st.just("batch"), st.lists(row, min_size=1, max_size=12)),
    st.tuples(st.just("failed"), st.lists(row, min_size=1, max_size=12)),
    st.tuples(st.just("checkpoint"), st.just([])),
    st.tuples(st.just("null_key"), st.lists(row, min_size=1, max_size=4)),
    st.tuples(st.just("failed_null_key"), st.lists(row, min_size=1, max_size=4)),
)


def model_output(model: dict, rows: list[tuple], n: int) -> list[tuple]:
    """Rows in (t, arrival) order, nulls first; each appended to its key's list and
    the aggregates over its last n."""
    ordered = sorted(rows, key=lambda r: (r[1] is not None, r[1] or 0))
    out = []
    for k, t, v in ordered:
        seen = model.setdefault(k, [])
        seen.append((t, v))
        window = [value for _, value in seen[-n:]]
        present = [value for value in window if value is not None]
        out.append(
            (
                k,
                sum(present) / len(present) if present else None,
                sum(present) if present else None,
                min(present) if present else None,
                max(present) if present else None,
                len(present),
                len(window),
            )
        )
    return out


def frame_of(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 4),
    sparse=st.booleans(),
    steps=st.lists(step, min_size=1, max_size=10),
)
def test_ring_matches_a_model_of_the_last_rows(n, sparse, steps):
    keys = [0, 1, 2, 3, 10**15, -7] if sparse else [0, 1, 2, 3, 4, 5]
    op = ReduceLast(["k"], n, AGGS, ["t"])
    model: dict = {}
    for kind, raw in steps:
        rows = [(keys[k], t, v) for k, t, v in raw]
        if kind == "checkpoint":
            state = {k: pa.table(v) for k, v in op.snapshot().items()}
            op = ReduceLast(["k"], n, AGGS, ["t"])
            op.restore(state)
            continue
        if kind in ("failed", "failed_null_key"):
            if kind == "failed_null_key":  # moves the state to the KeyedStore, undone
                rows = [(None, t, v) for _, t, v in rows]
            saved = op.savepoint()
            op.process(frame_of(rows))
            op.rollback(saved)
            continue
        if kind == "null_key":
            rows = [(None, t, v) for _, t, v in rows]
        saved = op.savepoint()
        out, _ = op.process(frame_of(rows))
        expected = model_output(model, rows, n)
        got = out.rows()
        assert len(got) == len(expected)
        for mine, theirs in zip(got, expected, strict=True):
            assert mine[0] == theirs[0]
            assert mine[2:] == theirs[2:]
            assert (mine[1] is None) == (theirs[1] is None)
            if mine[1] is not None:
                assert mine[1] == theirs[1]  # integer sums: the mean is exact
        assert op._ring_ok is not None
        del saved
    held = sum(min(len(v), n) for v in model.values())
    assert op.state_rows() == held


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.lists(row, min_size=1, max_size=20), min_size=1, max_size=6))
def test_ring_and_keyed_store_give_the_same_output_and_state(batches):
    ring = ReduceLast(["k"], 3, AGGS, ["t"])
    store = ReduceLast(["k"], 3, AGGS, ["t"])
    store._ring_ok = False  # the Polars path, for good
    for batch in batches:
        frame = frame_of([(k, t, v) for k, t, v in batch])
        assert ring.process(frame)[0].equals(store.process(frame)[0])
        assert ring._ring is not None
    mine = pl.from_arrow(ring.snapshot()["last_rows"]).sort("k", maintain_order=True)
    theirs = pl.from_arrow(store.snapshot()["last_rows"]).sort("k", maintain_order=True)
    assert mine.equals(theirs)
    # Each restores from the other's checkpoint.
    swapped = ReduceLast(["k"], 3, AGGS, ["t"])
    swapped.restore({"last_rows": store.snapshot()["last_rows"]})
    assert swapped._ring is not None
    last = frame_of([(1, 99, 5), (4, 99, None)])
    assert swapped.process(last)[0].equals(store.process(last)[0])


def test_ring_takes_only_exact_cases():
    ints = {"k": pl.Int64, "t": pl.Datetime("ms"), "v": pl.Int64}
    assert supported(["k"], ["t"], AGGS, ints, 10)
    assert not supported(["k"], ["t"], AGGS, {**ints, "v": pl.Float64}, 10)  # float sums
    assert not supported(["k"], ["t"], AGGS, {**ints, "k": pl.String}, 10)
    assert not supported(["k", "t"], [], AGGS, ints, 10)
    # Polars sums narrow integers in 64 bits as the ring does: same output.
    assert supported(["k"], ["t"], [Agg("sum", "v", "s")], {**ints, "v": pl.Int8}, 10)
    small = pl.DataFrame({"k": [1, 1, 1], "t": [1, 2, 3], "v": [100, 100, 100]}).cast(
        {"v": pl.Int8}
    )
    ring, store = (ReduceLast(["k"], 3, [Agg("sum", "v", "s")], ["t"]) for _ in range(2))
    store._ring_ok = False
    assert ring.process(small)[0].equals(store.process(small)[0])
    assert ring._ring is not None
    assert not supported(["k"], ["t"], [Agg("count", "k", "c")], ints, 10)
    assert not supported(["k"], ["t"], AGGS, {**ints, "t": pl.String}, 10)
    op = ReduceLast(["k"], 2, [Agg("mean", "v", "avg")], ["t"])
    out, _ = op.process(pl.DataFrame({"k": ["a"], "t": [1], "v": [1.5]}))
    assert op._ring is None and out.rows() == [("a", 1.5)]


def test_ring_batches_larger_than_one_matrix_go_in_chunks(monkeypatch):
    monkeypatch.setattr("dataflare_platform.engine.operators.last_rows.MATRIX_CELLS", 8)
    rng = np.random.default_rng(7)
    frame = pl.DataFrame(
        {"k": rng.integers(0, 4, 200), "t": np.arange(200), "v": rng.integers(0, 9, 200)}
    )
    ring = ReduceLast(["k"], 5, AGGS, ["t"])
    store = ReduceLast(["k"], 5, AGGS, ["t"])
    store._ring_ok = False
    assert ring.process(frame)[0].equals(store.process(frame)[0])
    assert isinstance(ring._ring, LastRowsRing)


def test_a_batch_without_the_value_column_fails_as_before_and_decides_nothing():
    op = ReduceLast(["k"], 2, [Agg("mean", "v", "avg")], ["t"])
    with pytest.raises(pl.exceptions.ColumnNotFoundError):
        op.process(pl.DataFrame({"k": [1], "t": [1]}))
    assert op._ring_ok is None
    out, _ = op.process(pl.DataFrame({"k": [1, 1], "t": [1, 2], "v": [3, 5]}))
    assert op._ring is not None and out.rows() == [(1, 3.0), (1, 4.0)]
