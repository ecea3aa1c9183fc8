"""The in-memory source. The source contract is ``engine.io.Source``; sources over
files and external systems are connectors (``dataflare_platform.connectors``)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from dataflare_platform.engine.io import Source

__all__ = ["Source", "TableSource"]


@dataclass
class TableSource:
    """In-memory source: one Arrow table per partition (tests, small inputs)."""

    name: str
    tables: dict[str, pa.Table]
    time_column: str = "date_time"

    @classmethod
    def single(cls, name: str, table: pa.Table, time_column: str = "date_time") -> TableSource:
        return cls(name=name, tables={"0": table}, time_column=time_column)

    @property
    def schema(self) -> pa.Schema:
        return next(iter(self.tables.values())).schema

    def partitions(self) -> list[str]:
        return list(self.tables)

    def read(self, partition: str, offset: int, max_rows: int) -> pa.Table:
        return self.tables[partition].slice(offset, max_rows)

    def end_offset(self, partition: str) -> int | None:
        return self.tables[partition].num_rows
