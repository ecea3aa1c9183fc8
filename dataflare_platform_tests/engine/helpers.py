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


def drive(op, df: pl.DataFrame, batch_rows: int, start: int = 0, stop: int | None = None):
    """Feed ``df[start:stop]`` to a windowed operator in batches of ``batch_rows``; after
    each, advance the watermark to 2 s behind the newest event time so far (rows before
    ``start`` count: a restored operator has seen them). The fired frames, in order."""
    out = []
    stop = df.height if stop is None else stop
    newest = int(df.slice(0, max(start, 1)).get_column("date_time").cast(pl.Int64).max())
    for offset in range(start, stop, batch_rows):
        batch = df.slice(offset, min(batch_rows, stop - offset))
        op.process(batch)
        newest = max(newest, int(batch.get_column("date_time").cast(pl.Int64).max()))
        fired = op.advance(newest - 2_000)
        if fired is not None:
            out.append(fired)
    return out
