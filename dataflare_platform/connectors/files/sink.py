"""One Parquet file as a sink: streamed, at-least-once (it keeps no checkpoint), for
benchmarks and one-off exports."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from dataflare_platform.engine.io import Sink


class ParquetSink(Sink):
    """Streams output to one Parquet file (at-least-once: no checkpoint is kept)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0
        self.side_rows = 0

    def write(self, output: pl.DataFrame | None, side: pl.DataFrame | None) -> None:
        if side is not None:
            self.side_rows += side.height
        if output is None or output.height == 0:
            return
        table = output.to_arrow()
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.path, table.schema)
        self._writer.write_table(table.cast(self._writer.schema))
        self.rows += output.height

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
