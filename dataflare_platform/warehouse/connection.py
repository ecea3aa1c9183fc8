"""Opening the DuckDB warehouse file.

DuckDB allows one writing process per file; a second process gets an IOException until
the first closes. Short retries cover the overlap of two runs; the connection is always
closed, even when the caller fails, so a failed step never keeps the file locked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb


@contextmanager
def connect(
    path: Path, retries: int = 20, delay_s: float = 0.25
) -> Iterator[duckdb.DuckDBPyConnection]:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            conn = duckdb.connect(str(path))
            break
        except duckdb.IOException:
            if attempt == retries:
                raise
            time.sleep(delay_s)
    try:
        yield conn
    finally:
        conn.close()


def scalar(conn: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> object:
    """First column of the first row. Fetches the whole (one-row) result: duckdb 2.0
    refuses further work on a connection whose last result was only partly fetched."""
    rows = conn.execute(sql, params or {}).fetchall()
    return rows[0][0] if rows else None
