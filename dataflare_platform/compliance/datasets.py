"""Where a governed dataset's rows are, so checks can read them: a DuckDB table (the
warehouse, or a stream pipeline's output file), a folder of Parquet files, or a topic
of the embedded event log. Paths are relative to the project home unless absolute."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from pydantic import Field, model_validator

from dataflare_platform.connectors import duckdb as duckdb_connector
from dataflare_platform.errors import MissingPathError
from dataflare_platform.events.log import EventLog, TopicNotFoundError
from dataflare_platform.home import ProjectHome
from dataflare_platform.models import StrictModel
from dataflare_platform.sql_names import SQL_IDENTIFIER, quote_identifier

WAREHOUSE_FILE = "warehouse.duckdb"


class NoRowsYetError(MissingPathError):
    """The table is a stream pipeline's output that its sink has opened (the file holds
    the sink's checkpoint table) but no row has reached yet: e.g. no window has closed on
    a fresh topic. Not missing data: nothing was produced that a check could judge."""


class DuckDBTableRef(StrictModel):
    path: Path = Path(WAREHOUSE_FILE)
    # A plain lower-case identifier: refused at load naming ``data.duckdb.table``.
    table: str = Field(pattern=SQL_IDENTIFIER, max_length=120)


class DatasetRef(StrictModel):
    """Exactly one of ``duckdb``, ``parquet`` (a folder, read recursively) or ``topic``."""

    duckdb: DuckDBTableRef | None = None
    parquet: Path | None = None
    topic: str | None = None

    @model_validator(mode="after")
    def _one(self) -> DatasetRef:
        given = [k for k in ("duckdb", "parquet", "topic") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of duckdb, parquet, topic")
        return self

    def describe(self) -> str:
        if self.duckdb is not None:
            return f"duckdb {self.duckdb.path}:{self.duckdb.table}"
        if self.parquet is not None:
            return f"parquet {self.parquet}"
        return f"topic {self.topic}"


def _resolve(root: Path, path: Path) -> Path:
    return path if path.is_absolute() else root / path


def read_dataset(ref: DatasetRef, home_root: Path, limit: int | None = None) -> pl.DataFrame:
    """The dataset's rows (the first ``limit`` if given). A missing table, folder or
    topic raises FileNotFoundError naming it: a check of data that is not there yet
    should say so, not pass on zero rows."""
    if ref.duckdb is not None:
        path = _resolve(home_root, ref.duckdb.path)
        if not path.exists():
            raise MissingPathError(f"no DuckDB file {path}")
        with duckdb_connector.reading(path) as conn:
            names = {r[0] for r in conn.sql("SELECT table_name FROM duckdb_tables()").fetchall()}
            if ref.duckdb.table not in names and duckdb_connector.CHECKPOINT_TABLE in names:
                raise NoRowsYetError(
                    f"no rows yet in {ref.duckdb.table!r}: the pipeline writing {path} has "
                    "run but emitted nothing yet (e.g. no window has closed)"
                )
            if ref.duckdb.table not in names:
                raise MissingPathError(f"no table {ref.duckdb.table!r} in {path}")
            sql = f"SELECT * FROM {quote_identifier(ref.duckdb.table)}"
            if limit is not None:
                sql += f" LIMIT {int(limit)}"
            return pl.from_arrow(conn.sql(sql).to_arrow_table())  # type: ignore[return-value]
    if ref.parquet is not None:
        folder = _resolve(home_root, ref.parquet)
        files = sorted(folder.rglob("*.parquet")) if folder.is_dir() else []
        if not files:
            raise MissingPathError(f"no Parquet files under {folder}")
        frame = pl.scan_parquet(files, hive_partitioning=False)
        return (frame.head(limit) if limit is not None else frame).collect()
    log = EventLog(ProjectHome.resolve(home_root).event_log_dir)
    try:
        frame = log.topic(ref.topic).scan()  # type: ignore[arg-type]
    except TopicNotFoundError as err:
        raise MissingPathError(str(err)) from None
    return (frame.head(limit) if limit is not None else frame).collect()
