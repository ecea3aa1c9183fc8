"""KeyedTopN's upsert stream ends as DuckDB's ``row_number() <= n`` per key, with ties on
``by`` (broken by every other column ascending, nulls last), nulls in ``by`` and in the
key, and any batch cut: the fast path (rank on ``by``) and the full sort agree."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, Stream, TableSource
from dataflare_platform.engine.operators.keyed import KeyedTopN


def _table(seed: int, nulls: bool) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = 1_500
    v = rng.integers(0, 4, n).astype(object)  # few values: many ties
    if nulls:
        v[rng.random(n) < 0.1] = None
    k = rng.choice(["a", "b", "c", "d", None], n).tolist()
    s = rng.choice(["x", "y", None], n).tolist()
    return pa.table(
        {
            "k": pa.array(k, pa.string()),
            "v": pa.array(v.tolist(), pa.int64()),
            "s": pa.array(s, pa.string()),
            "x": pa.array(rng.permutation(n), pa.int64()),  # makes the order total
            "date_time": pa.array(np.sort(rng.integers(0, 60_000, n)), pa.int64()),
        }
    )


@pytest.mark.parametrize("nulls", [False, True])
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("descending", [True, False])
@pytest.mark.parametrize("batch_rows", [1, 7, 1_000])
def test_top_n_ends_as_duckdbs_row_number(nulls, n, descending, batch_rows):
    table = _table(seed=n * 10 + batch_rows, nulls=nulls)
    sink = CollectSink()
    pipeline = (
        Stream.source(TableSource.single("t", table))
        .key_by("k")
        .top_n("v", n=n, descending=descending, rank_column="r")
        .sink(sink)
    )
    Runner(pipeline, RunnerConfig(batch_rows=batch_rows)).run()
    got = sink.result().group_by("k", "r", maintain_order=True).last()
    direction = "DESC" if descending else "ASC"
    conn = duckdb.connect()
    conn.register("t", table)
    truth = pl.from_arrow(
        conn.sql(
            f"""
            SELECT * FROM (
              SELECT *, row_number() OVER (PARTITION BY k ORDER BY v {direction} NULLS LAST,
                s ASC NULLS LAST, x, date_time) AS r FROM t)
            WHERE r <= {n}"""
        ).to_arrow_table()
    )
    columns = ["k", "r", "v", "s", "x"]
    got = got.select(columns).cast(truth.select(columns).schema)
    truth = truth.select(columns)
    assert got.height == truth.height > 0
    assert got.sort("k", "r", nulls_last=True).equals(truth.sort("k", "r", nulls_last=True))


@pytest.mark.parametrize("gather_held", [False, True])
@pytest.mark.parametrize(
    ("held", "batch"),
    [(pl.Int64, pl.Int32), (pl.Datetime("ms"), pl.Datetime("us")), (pl.UInt64, pl.Int64)],
)
def test_a_batch_typed_unlike_the_held_rows_ranks_with_them(gather_held, held, batch):
    """The held rows' ranked column has one type, the batch's another: ranked together
    as one (the batch's microseconds are not read as the held milliseconds), whether the
    held rows are gathered first or read as numbers (``gather_held``; the numbers are
    refused for another type, and Polars ranks)."""
    op = KeyedTopN(["k"], ["v"], [True], 2, "r", None)
    op.bind("date_time")
    schema = {"k": pl.Int64, "v": pl.Int64, "date_time": pl.Int64}
    first = pl.DataFrame({"k": [1, 1, 2], "v": [5, 3, 7], "date_time": [1, 2, 3]}, schema)
    op.process(first.with_columns(pl.col("v").cast(held)))
    op._kept_share = 1.0 if gather_held else 0.0  # the hint the last batch left
    second = pl.DataFrame({"k": [1, 2], "v": [4, 9], "date_time": [4, 5]}, schema)
    out, _ = op.process(second.with_columns(pl.col("v").cast(held).cast(batch)))
    got = out.select("k", pl.col("v").cast(held).cast(pl.Int64), "r")
    assert sorted(got.rows()) == [(1, 4, 2), (1, 5, 1), (2, 7, 2), (2, 9, 1)]


@pytest.mark.parametrize("gather_held", [False, True])
def test_held_unsigned_values_past_int64_rank_with_a_signed_batch(gather_held):
    """Held UInt64 values past int64 beside an Int64 batch: Polars widens the two to
    Int128, whose values do not fit the numpy ranking's int64, so Polars ranks them (the
    strict cast to int64 raised, gathered first)."""
    big = 2**63 + 5
    op = KeyedTopN(["k"], ["v"], [True], 2, "r", None)
    op.bind("date_time")
    first = pl.DataFrame(
        {"k": [1, 1, 2], "v": [big, 3, 7], "date_time": [1, 2, 3]},
        {"k": pl.Int64, "v": pl.UInt64, "date_time": pl.Int64},
    )
    op.process(first)
    op._kept_share = 1.0 if gather_held else 0.0  # the hint the last batch left
    second = pl.DataFrame({"k": [1, 2], "v": [4, 9], "date_time": [4, 5]})
    out, _ = op.process(second)
    got = sorted(out.select("k", pl.col("v").cast(pl.Int128), "r").rows())
    assert got == [(1, 4, 2), (1, big, 1), (2, 7, 2), (2, 9, 1)]


@pytest.mark.parametrize("gather_held", [False, True])
@pytest.mark.parametrize(
    "dtype", [pl.Time, pl.Date, pl.Datetime("ms", "UTC"), pl.Duration("us"), pl.UInt8]
)
def test_ties_on_by_are_broken_by_a_temporal_column_of_the_held_rows(gather_held, dtype):
    """Ties on ``v`` are broken by ``t`` ascending, of any temporal type: the held rows'
    values, read as numbers (a Time through Polars: numpy holds it as objects) or
    gathered first (``gather_held``), rank with the batch's."""
    op = KeyedTopN(["k"], ["v"], [True], 2, "r", None)
    op.bind("date_time")
    schema = {"k": pl.Int64, "v": pl.Int64, "t": pl.Int64, "date_time": pl.Int64}

    def frame(rows: list[tuple]) -> pl.DataFrame:
        return pl.DataFrame(rows, schema, orient="row").with_columns(pl.col("t").cast(dtype))

    op.process(frame([(1, 5, 30, 1), (1, 5, 10, 2), (2, 7, 20, 3)]))
    op._kept_share = 1.0 if gather_held else 0.0  # the hint the last batch left
    out, _ = op.process(frame([(1, 5, 20, 4), (2, 7, 5, 5)]))
    got = out.select("k", pl.col("t").to_physical().cast(pl.Int64), "r")
    assert sorted(got.rows()) == [(1, 10, 1), (1, 20, 2), (2, 5, 1), (2, 20, 2)]
