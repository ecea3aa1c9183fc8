"""Opening a DuckDB file another process holds: bounded retries with backoff, then a
typed error naming the file; other errors are not retried."""

import subprocess
import sys

import duckdb
import pytest

from dataflare_platform.warehouse.connection import StoreLockedError, open_duckdb

HOLDER = """
import sys, duckdb
conn = duckdb.connect(sys.argv[1])
print("locked", flush=True)
sys.stdin.readline()
conn.close()
"""


def test_a_locked_file_is_retried_with_backoff_then_reported(tmp_path):
    path = tmp_path / "store.duckdb"
    duckdb.connect(str(path)).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        waits: list[float] = []
        with pytest.raises(StoreLockedError) as err:
            open_duckdb(path, attempts=4, backoff_s=0.5, max_backoff_s=1.5, sleep=waits.append)
        assert waits == [0.5, 1.0, 1.5]  # doubling, capped; none after the last attempt
        assert err.value.path == path and err.value.attempts == 4
        assert str(path) in str(err.value)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    with open_duckdb(path, attempts=1) as conn:  # released: opens at the first attempt
        assert conn.execute("SELECT 42").fetchall() == [(42,)]


def test_errors_other_than_a_lock_are_not_retried(tmp_path):
    waits: list[float] = []
    with pytest.raises(duckdb.IOException):
        open_duckdb(tmp_path / "missing" / "dir" / "x.duckdb", read_only=True, sleep=waits.append)
    assert waits == []
