"""Small event tables for engine tests."""

import numpy as np
import polars as pl
import pyarrow as pa

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms


def events(times_ms, keys=None, values=None) -> pa.Table:
    """An event table: key, value, date_time (timestamp[ms]) — in the given order."""
    times = np.asarray(times_ms, dtype=np.int64) + T0
    n = len(times)
    keys = np.zeros(n, dtype=np.int64) if keys is None else np.asarray(keys, dtype=np.int64)
    values = np.arange(n, dtype=np.int64) if values is None else np.asarray(values, np.int64)
    return pa.table(
        {
            "key": pa.array(keys),
            "value": pa.array(values),
            "date_time": pa.array(times).cast(pa.timestamp("ms")),
        }
    )


def ts(ms: int) -> pl.Expr:
    return pl.lit(T0 + ms).cast(pl.Datetime("ms"))
