"""A side input backed by a file (CSV or Parquet): the table an enrich join looks rows
up in, reloaded when the file changes.

A local file's etag is (modification time in ns, size, inode): checked with one ``stat``
per batch (microseconds), the file is read again only when that changes. Writers should
replace the file atomically (write aside, then rename): a reader then never sees half a
file. The tag is taken before the read, so a change during the read is caught at the
next batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from dataflare_platform.errors import InvalidInputError, MissingPathError


class FileSideTable:
    """``current()``: the file's table as of now (the engine's ``SideTable``)."""

    def __init__(self, path: Path | str, schema: dict[str, pl.DataType] | None = None) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".csv", ".parquet"):
            raise InvalidInputError(f"side table {self.path}: a .csv or .parquet file, please")
        self.format = suffix[1:]
        self.schema = schema
        self.loads = 0  # how many times the file was read (the first load counts)
        self._tag: tuple[int, int, int] | None = None
        self._table: pl.DataFrame | None = None

    def etag(self) -> tuple[int, int, int]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise MissingPathError(f"side table {self.path}: no such file") from None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self) -> pl.DataFrame:
        tag = self.etag()
        if self._table is None or tag != self._tag:
            if self.format == "csv":
                table = pl.read_csv(self.path, schema_overrides=self.schema)
            else:
                table = pl.read_parquet(self.path)
                if self.schema:
                    table = table.cast(self.schema)  # type: ignore[arg-type]
            self._table, self._tag = table, tag
            self.loads += 1
        return self._table


def write_side_table(table: pl.DataFrame, path: Path | str) -> Path:
    """Write ``table`` to ``path`` (CSV or Parquet by suffix) atomically: aside, then
    renamed over the old file, so a ``FileSideTable`` never reads half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if path.suffix.lower() == ".csv":
        table.write_csv(tmp)
    else:
        table.write_parquet(tmp)
    tmp.replace(path)
    return path
