"""``physical.int64_values``: every integer and temporal type, one chunk or many, whole or
at positions, equals Polars' own physical cast; anything it cannot read exactly is None."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from dataflare_platform.engine.operators.physical import int64_values

TYPES = [
    pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64,
    pl.Date, pl.Datetime("ms"), pl.Datetime("us", "UTC"), pl.Datetime("ns"),
    pl.Duration("ms"), pl.Duration("us"), pl.Time, pl.Int128, pl.UInt128,
]  # fmt: skip


def column(dtype: pl.DataType, chunks: int) -> pl.Series:
    """40 values of ``dtype`` in ``chunks`` chunks (as a frame loaded from a checkpoint)."""
    values = np.arange(0, 120, 3) % 97 + 1
    if dtype == pl.Time:
        values = values * 1_000_000_000  # nanoseconds since midnight
    parts = [
        pl.Series("c", part, dtype=pl.Int64).cast(dtype) for part in np.array_split(values, chunks)
    ]
    out = parts[0]
    for part in parts[1:]:
        out.append(part)
    assert out.n_chunks() == chunks
    return out


@pytest.mark.parametrize("dtype", TYPES, ids=str)
@pytest.mark.parametrize("chunks", [1, 3])
def test_values_equal_the_physical_cast_whole_and_at_positions(dtype, chunks):
    series = column(dtype, chunks)
    expected = series.to_physical().cast(pl.Int64).to_numpy()
    whole = int64_values(series)
    assert whole is not None and whole.dtype == np.int64
    assert np.array_equal(whole, expected)
    positions = np.array([39, 0, 7, 7, 20], dtype=np.int64)
    picked = int64_values(series, positions)
    assert picked is not None and np.array_equal(picked, expected[positions])


def test_what_cannot_be_read_exactly_is_none():
    assert int64_values(pl.Series([1, None, 3], dtype=pl.Int64)) is None
    assert int64_values(pl.Series([dt.date(2026, 1, 1), None])) is None
    assert int64_values(pl.Series([1.5, 2.0])) is None
    assert int64_values(pl.Series(["a", "b"])) is None
    past = pl.Series([1, np.iinfo(np.int64).max + 1], dtype=pl.UInt64)
    assert int64_values(past) is None
    for wide in (pl.Int128, pl.UInt128):
        assert int64_values(past.cast(wide)) is None
    assert int64_values(pl.Series([-(2**63) - 1, 0], dtype=pl.Int128)) is None
    fits = pl.Series([1, np.iinfo(np.int64).max], dtype=pl.UInt64)
    assert np.array_equal(int64_values(fits), [1, np.iinfo(np.int64).max])  # type: ignore[arg-type]
