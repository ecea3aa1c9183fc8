"""Columns as their physical numbers in numpy (epoch units for temporal types), for the
operators that rank, bucket or compare them vectorised there. Per-batch paths call these
on every batch, so each reads the cheapest way measured: a numpy view of one chunk
rather than a Polars plan, cast or gather."""

from __future__ import annotations

import numpy as np
import polars as pl


def physical_numpy(series: pl.Series) -> np.ndarray:
    """A column's physical values (epoch units for temporal types) as numpy. A cast to
    the physical integer type costs microseconds per 10k rows, where ``to_physical()``
    costs about 0.1 ms (measured), which matters on the per-batch path."""
    if series.dtype == pl.Date:
        return series.cast(pl.Int32).to_numpy()
    if series.dtype.is_temporal():
        return series.cast(pl.Int64).to_numpy()
    return series.to_numpy()


# Types numpy holds natively, so a single chunk of them is read as a view. Sets of the
# dtype classes, tested with ``type(dtype) in``: ``isinstance`` against Polars' dtype
# classes costs 1-1.5 us a call, against 0.05 us, and this runs per store segment.
VIEWED = frozenset(
    {pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64,
     pl.Datetime, pl.Date, pl.Duration}
)  # fmt: skip
WIDER_THAN_INT64 = frozenset({pl.UInt64, pl.Int128, pl.UInt128})  # values may not fit
INT64_MIN, INT64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max


def int64_values(series: pl.Series, positions: np.ndarray | None = None) -> np.ndarray | None:
    """An integer or temporal column without nulls as int64 (temporal: its physical
    value), at ``positions`` when given; None for any other type, a null, or a value
    past int64 (an unsigned or 128-bit column: Polars widens UInt64 beside Int64 to
    Int128). A single-chunk column of a type numpy holds is read as a numpy view and
    gathered there: a Polars gather or cast per call costs more than the values at
    per-batch sizes (the top-N ranks its candidates and the held rows of every store
    segment this way). A Time (objects in numpy), a 128-bit and a multi-chunk column go
    through Polars' gather and physical cast."""
    dtype = series.dtype
    if series.null_count() or not (dtype.is_integer() or dtype.is_temporal()):
        return None
    wide = type(dtype) in WIDER_THAN_INT64 and series.len()
    if wide and (series.max() > INT64_MAX or series.min() < INT64_MIN):  # type: ignore[operator]
        return None
    if series.n_chunks() == 1 and type(dtype) in VIEWED:
        values = series.to_numpy()  # no nulls, one chunk: a view
        if positions is not None:
            values = values[positions]
        if values.dtype.kind in "Mm":
            values = values.view(np.int64)
    else:
        if positions is not None:
            series = series.gather(positions)
        values = series.to_physical().cast(pl.Int64).to_numpy()
    return values.astype(np.int64, copy=False)
