"""Loading landed Nexmark files into DuckDB tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from dataflare_platform.errors import CorruptInputError
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform.warehouse.connection import scalar
from dataflare_platform.warehouse.files import open_event_dataset


@dataclass(frozen=True)
class LoadResult:
    table: str
    rows: int
    files: list[Path]
    schema: pa.Schema


def load_table(
    conn: duckdb.DuckDBPyConnection, table: str, directory: Path, schema: pa.Schema
) -> LoadResult:
    """Replace ``table`` with the contents of every event file in ``directory``.

    The replace runs in one transaction, so readers see the old table or the new one,
    never a partial load.
    """
    dataset, files = open_event_dataset(directory, schema)
    conn.register("_landed", dataset)
    try:
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.execute(
                f"CREATE OR REPLACE TABLE {quote_identifier(table)} AS SELECT * FROM _landed"
            )
        except duckdb.Error as err:
            conn.execute("ROLLBACK")
            raise CorruptInputError(Path(directory), f"could not be loaded: {err}") from None
        except pa.ArrowException as err:
            conn.execute("ROLLBACK")
            raise CorruptInputError(Path(directory), f"could not be scanned: {err}") from None
        conn.execute("COMMIT")
    finally:
        conn.unregister("_landed")
    rows = scalar(conn, f"SELECT count(*) FROM {quote_identifier(table)}")
    return LoadResult(table=table, rows=rows, files=files, schema=schema)
