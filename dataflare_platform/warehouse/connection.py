"""Opening DuckDB files: the warehouse, and any other store a job writes.

DuckDB allows one writing process per file; any other process gets an IOException
("Could not set lock on file") until the first closes. Short retries cover the overlap
of two runs; the connection is always closed, even when the caller fails, so a failed
step never keeps the file locked. Jobs keep one writer per file in the first place
(``defs/pools.py``); the retries are for what the orchestrator does not see (a CLI, a
notebook, a continuous run of another code location).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from dataflare_platform.errors import DataflareError

# DuckDB's wording (1.x and 2.0) when another process holds the file; the path it quotes
# may itself contain "lock", so the whole phrase is matched.
LOCK_MESSAGE = "Could not set lock on file"


class StoreLockedError(DataflareError):
    """A DuckDB file stayed locked by another process through every attempt to open it:
    nothing was read or changed, and trying again later may succeed."""

    def __init__(self, path: Path, attempts: int, waited_s: float) -> None:
        self.path = Path(path)
        self.attempts = attempts
        self.waited_s = waited_s
        super().__init__(
            f"{self.path} is locked by another process ({attempts} attempts over {waited_s:.1f} s)"
        )


def is_lock_error(err: BaseException) -> bool:
    """DuckDB's "another process holds this file" error, as opposed to a missing
    directory, a corrupt file or a permission problem (which retrying cannot fix)."""
    return isinstance(err, duckdb.IOException) and LOCK_MESSAGE in str(err)


def open_duckdb(
    path: Path | str,
    *,
    read_only: bool = False,
    attempts: int = 5,
    backoff_s: float = 0.5,
    max_backoff_s: float = 8.0,
    sleep: Callable[[float], None] = time.sleep,
) -> duckdb.DuckDBPyConnection:
    """Open ``path``, waiting with exponential backoff (``backoff_s``, doubling, capped at
    ``max_backoff_s``) while another process holds its lock; after ``attempts`` tries,
    raise ``StoreLockedError``. Other errors are raised at once."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    waited, delay = 0.0, backoff_s
    for attempt in range(1, attempts + 1):
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as err:
            if not is_lock_error(err):
                raise
            if attempt == attempts:
                raise StoreLockedError(Path(path), attempts, waited) from None
        sleep(delay)
        waited += delay
        delay = min(delay * 2, max_backoff_s)
    raise AssertionError("unreachable")  # pragma: no cover


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
