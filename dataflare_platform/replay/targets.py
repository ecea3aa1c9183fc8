"""Where a replay's output goes. Output is staged while the pipeline runs and published
in one step at the end, so a replay that fails leaves the target as it was.

Publishing with an owned range (``column`` in [start, end)) deletes those rows and
inserts the replayed ones in one transaction: running the same replay twice leaves the
target identical. Without an owned range (an offset-range replay, whose rows cannot be
told apart from others) the target's contents are replaced as a whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import duckdb
import polars as pl

from dataflare_platform.connectors.parquet_dataset import ParquetDatasetSink
from dataflare_platform.engine.checkpoint import Checkpoint
from dataflare_platform.errors import InvalidInputError
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform.times import as_utc

Owned = tuple[str, int, int]  # (column, start ms, end ms): the rows a replay replaces


class ReplayTarget(Protocol):
    def original_watermark(self, pipeline: str) -> int | None:
        """Watermark of ``pipeline``'s own last commit to this target (None: none)."""
        ...

    def open(self) -> None: ...

    def stage(self, rows: pl.DataFrame) -> None: ...

    def publish(self, owned: Owned | None) -> None: ...

    def close(self) -> None: ...


class MemoryTarget:
    """Keeps the replayed rows in memory (``output``): the Python API's default."""

    def __init__(self) -> None:
        self._frames: list[pl.DataFrame] = []
        self.output: pl.DataFrame = pl.DataFrame()

    def original_watermark(self, pipeline: str) -> int | None:
        return None

    def open(self) -> None:
        self._frames.clear()

    def stage(self, rows: pl.DataFrame) -> None:
        self._frames.append(rows)

    def publish(self, owned: Owned | None) -> None:
        if self._frames:
            self.output = pl.concat(self._frames, how="vertical_relaxed")

    def close(self) -> None:
        self._frames.clear()


class DuckDBTableTarget:
    """A table in a DuckDB file: a new one, or a pipeline's own output table (overwrite).

    Rows are staged in ``<table>__replay`` in the same file; publishing moves them into
    the table (matching columns by name) in the transaction that deletes the owned rows.
    Only this class writes the file during a replay: the original pipeline's checkpoint
    row is read (``original_watermark``), never written.
    """

    def __init__(self, path: Path | str, table: str) -> None:
        if not table or '"' in table:
            raise InvalidInputError(f"not a usable table name: {table!r}")
        self.path = Path(path)
        self.table = table
        self.staging = f"{table}__replay"
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._staged = False

    @property
    def conn(self) -> duckdb.DuckDBPyConnection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = duckdb.connect(str(self.path))
        return self._conn

    def open(self) -> None:
        self.conn.execute(
            f"DROP TABLE IF EXISTS {quote_identifier(self.staging)}"
        )  # a failed replay's
        self._staged = False

    def stage(self, rows: pl.DataFrame) -> None:
        self.conn.register("_replay_rows", rows.to_arrow())
        try:
            if self._staged:
                self.conn.execute(
                    f"INSERT INTO {quote_identifier(self.staging)} BY NAME"
                    " SELECT * FROM _replay_rows"
                )
            else:
                self.conn.execute(
                    f"CREATE TABLE {quote_identifier(self.staging)} AS SELECT * FROM _replay_rows"
                )
                self._staged = True
        finally:
            self.conn.unregister("_replay_rows")

    def columns(self, table: str | None = None) -> list[str] | None:
        """Columns of ``table`` (default: the target), or None if it does not exist."""
        rows = self.conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $t"
            " ORDER BY ordinal_position",
            {"t": table or self.table},
        ).fetchall()
        return [r[0] for r in rows] or None

    def staged_columns(self) -> list[str] | None:
        return self.columns(self.staging) if self._staged else None

    def original_watermark(self, pipeline: str) -> int | None:
        """The watermark of ``pipeline``'s last checkpoint in this file (None if it has
        none here): windows ending at or before it have been written by that pipeline."""
        exists = self.conn.execute(
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_name = 'dataflare_checkpoints'"
        ).fetchone()
        if not exists or not exists[0]:
            return None
        rows = self.conn.execute(
            "SELECT state FROM dataflare_checkpoints WHERE pipeline = $p", {"p": pipeline}
        ).fetchall()
        if not rows:
            return None
        return int(Checkpoint.decode(bytes(rows[0][0])).watermark["emitted"])

    def publish(self, owned: Owned | None) -> None:
        conn = self.conn
        table = quote_identifier(self.table)
        existing = self.columns()
        conn.execute("BEGIN TRANSACTION")
        try:
            if existing is not None and owned is None:
                conn.execute(f"DELETE FROM {table}")
            elif existing is not None and owned is not None:
                column, start, end = owned
                if column not in existing:
                    raise InvalidInputError(
                        f"table {self.table!r} has no column {column!r} to find the replayed"
                        f" rows by (columns: {existing})"
                    )
                conn.execute(
                    f"DELETE FROM {table} WHERE {self._ms(column)} >= $s AND {self._ms(column)}"
                    " < $e",
                    {"s": start, "e": end},
                )
            if self._staged:
                if existing is None:
                    conn.execute(
                        f"CREATE TABLE {table} AS SELECT * FROM {quote_identifier(self.staging)}"
                    )
                else:
                    conn.execute(
                        f"INSERT INTO {table} BY NAME"
                        f" SELECT * FROM {quote_identifier(self.staging)}"
                    )
                conn.execute(f"DROP TABLE {quote_identifier(self.staging)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._staged = False

    def _ms(self, column: str) -> str:
        """SQL for ``column`` as epoch ms (timestamps are stored as TIMESTAMP_MS)."""
        kind = self.conn.execute(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_name = $t AND column_name = $c",
            {"t": self.table, "c": column},
        ).fetchone()
        data_type = str(kind[0]) if kind else ""
        if "TIME ZONE" in data_type:
            return f"epoch_ms({quote_identifier(column)})"
        if data_type.startswith("TIMESTAMP") or data_type == "DATE":
            return f"epoch_ms(CAST({quote_identifier(column)} AS TIMESTAMP))"
        return quote_identifier(column)

    def close(self) -> None:
        if self._conn is not None:
            if self._staged:  # staged but never published: the replay failed
                self._conn.execute(f"DROP TABLE IF EXISTS {quote_identifier(self.staging)}")
            self._conn.close()
            self._conn = None


class ParquetDatasetTarget:
    """A date-partitioned Parquet dataset (``connectors.parquet_dataset``): the owned
    range is whole UTC days of ``time_column`` (the plan is widened to them), and
    publishing swaps those date partitions in one commit of the dataset's manifest, dates
    left without rows included. The rows are held in memory until then (a day of the
    output; fine for aggregates, heavy for a pass-through of a busy topic)."""

    def __init__(self, root: Path | str, time_column: str, partition_by: str = "date") -> None:
        self.time_column = time_column
        self.sink = ParquetDatasetSink(root, time_column, partition_by)
        self._frames: list[pl.DataFrame] = []

    def original_watermark(self, pipeline: str) -> int | None:
        checkpoint = self.sink.open(pipeline)  # refuses another pipeline's dataset
        self.sink.close()
        return None if checkpoint is None else int(checkpoint.watermark["emitted"])

    def open(self) -> None:
        self._frames.clear()

    def stage(self, rows: pl.DataFrame) -> None:
        self._frames.append(rows)

    def publish(self, owned: Owned | None) -> None:
        if owned is None:
            raise InvalidInputError(
                "a dataset is replaced by whole days: give an event-time interval"
            )
        column, start, end = owned
        if column != self.time_column:
            raise InvalidInputError(
                f"the dataset is partitioned by {self.time_column!r}, the replay owns rows"
                f" by {column!r}"
            )
        day = 86_400_000
        dates = [as_utc(ms).date() for ms in range(start, end, day)]
        if self._frames:
            rows = pl.concat(self._frames, how="vertical_relaxed")
        else:
            files = self.sink.committed_files()
            if not files:
                return  # nothing there, nothing replayed
            rows = pl.DataFrame(schema=pl.read_parquet_schema(files[0]))
        self.sink.replace_partitions(rows, dates)

    def close(self) -> None:
        self._frames.clear()
