"""DuckDB sink: output table, side-output table and checkpoint in one DuckDB file,
written in one transaction per commit (exactly-once with the runner's checkpoints)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from dataflare_platform.engine.checkpoint import STORED_COMPRESSION, Checkpoint
from dataflare_platform.engine.io import TransactionalSink, newest_per_key
from dataflare_platform.errors import ConflictError
from dataflare_platform.sql_names import quote_identifier

# How long opening waits for another process's lock on the file. Readers (the lag sensor,
# ``dataflare dlq``, schema lookups) hold it for milliseconds; a writer is another run of
# the same pipeline, which the stream pools keep from happening.
LOCK_WAIT_S = 30.0
# The sink's checkpoint table: its presence in a file says a pipeline sink opened it (and
# has committed or is about to), even before the first output row creates the output table.
CHECKPOINT_TABLE = "dataflare_checkpoints"


def connect_for_writing(
    path: Path, wait_s: float = LOCK_WAIT_S, on_wait: Callable[[], None] | None = None
) -> duckdb.DuckDBPyConnection:
    """A read-write connection, waiting while another process holds the file's lock
    (DuckDB gives a writer the file alone, so a reader's moment would fail a run).
    ``on_wait`` is called before each wait."""
    deadline = time.monotonic() + wait_s
    delay = 0.01
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as err:
            if "lock" not in str(err).lower() or time.monotonic() >= deadline:
                raise
        if on_wait is not None:
            on_wait()
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


class DuckDBSink(TransactionalSink):
    """Output table, side-output table and checkpoint in one DuckDB file, all written in
    one transaction per commit (exactly-once with the runner's checkpoints).

    ``upsert_keys`` turns the output table into a keyed table holding each key's newest
    row (for updating results such as a running average per category).
    """

    def __init__(self, path: Path, table: str, upsert_keys: list[str] | None = None) -> None:
        self.path = Path(path)
        self.table = table
        self.side_table = f"{table}_side"
        self.upsert_keys = upsert_keys
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._pipeline = ""
        self._table_ready = False

    def open(self, pipeline: str) -> Checkpoint | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.discard_pending()
        self._conn = connect_for_writing(self.path)
        self._pipeline = pipeline
        self._table_ready = False
        _create(
            self._conn,
            f"CREATE TABLE IF NOT EXISTS {CHECKPOINT_TABLE} ("
            " pipeline VARCHAR PRIMARY KEY, state BLOB NOT NULL,"
            " committed_at TIMESTAMP DEFAULT current_timestamp)",
        )
        _create(
            self._conn,
            f"CREATE TABLE IF NOT EXISTS {quote_identifier(self.side_table)}"
            " (kind VARCHAR, operator VARCHAR, reason VARCHAR, payload VARCHAR)",
        )
        rows = self._conn.execute(
            f"SELECT state FROM {CHECKPOINT_TABLE} WHERE pipeline = $p", {"p": pipeline}
        ).fetchall()
        return Checkpoint.decode(bytes(rows[0][0])) if rows else None

    def commit_batch(
        self, output: pl.DataFrame | None, side: pl.DataFrame | None, checkpoint: Checkpoint
    ) -> None:
        conn = self._conn
        assert conn is not None, "open() first"
        state = checkpoint.encode(STORED_COMPRESSION)
        if output is not None and not self._table_ready:
            # Created on its own, before the commit's transaction: the units of a
            # partition-parallel worker share the file, and two creating it inside their
            # transactions would conflict (DuckDB's catalog write-write conflict).
            with _registered(conn, "_out", output.to_arrow()):
                _create(
                    conn,
                    f"CREATE TABLE IF NOT EXISTS {quote_identifier(self.table)}"
                    " AS SELECT * FROM _out LIMIT 0",
                )
            self._table_ready = True
        with _transaction(conn):
            if output is not None:
                self._write_output(conn, newest_per_key(output, self.upsert_keys).to_arrow())
            if side is not None:
                with _registered(conn, "_side", side.to_arrow()):
                    conn.execute(
                        f"INSERT INTO {quote_identifier(self.side_table)} SELECT * FROM _side"
                    )
            _store_checkpoints(conn, "INSERT OR REPLACE", {self._pipeline: state})

    def _write_output(self, conn: duckdb.DuckDBPyConnection, out: pa.Table) -> None:
        with _registered(conn, "_out", out):
            table = quote_identifier(self.table)
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM _out LIMIT 0")
            if self.upsert_keys:
                keys = ", ".join(map(quote_identifier, self.upsert_keys))
                conn.execute(f"DELETE FROM {table} WHERE ({keys}) IN (SELECT ({keys}) FROM _out)")
            conn.execute(f"INSERT INTO {table} SELECT * FROM _out")

    def split_checkpoint(self, retired: Checkpoint, units: dict[str, Checkpoint]) -> None:
        """Write ``retired`` under the key ``open()`` was given (replacing its checkpoint,
        if any) and add ``units`` (new keys), in one transaction: a crash leaves either
        layout, never a mix. Refused (``ConflictError``) when a unit key already has a
        checkpoint: that progress would be overwritten."""
        conn = self._conn
        assert conn is not None, "open() first"
        with _transaction(conn):
            taken = sorted(
                row[0]
                for row in conn.execute(
                    f"SELECT pipeline FROM {CHECKPOINT_TABLE} WHERE list_contains($k, pipeline)",
                    {"k": sorted(units)},
                ).fetchall()
            )
            if taken:
                raise ConflictError(
                    f"checkpoints {taken} already exist in {self.path}: splitting"
                    f" {self._pipeline!r} would overwrite their progress"
                )
            _store_checkpoints(
                conn, "INSERT", {k: c.encode(STORED_COMPRESSION) for k, c in units.items()}
            )
            _store_checkpoints(
                conn, "INSERT OR REPLACE", {self._pipeline: retired.encode(STORED_COMPRESSION)}
            )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _create(conn: duckdb.DuckDBPyConnection, statement: str, attempts: int = 5) -> None:
    """Run a ``CREATE ... IF NOT EXISTS`` in its own transaction; when another connection
    of the process creates the same object at the same moment, DuckDB refuses the later
    one with a write-write conflict, and running it again finds the object there."""
    for attempt in range(attempts):
        try:
            conn.execute(statement)
            return
        except duckdb.TransactionException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.01 * (attempt + 1))


def _store_checkpoints(conn: duckdb.DuckDBPyConnection, verb: str, blobs: dict[str, bytes]) -> None:
    """``verb`` (INSERT, or INSERT OR REPLACE) a row per pipeline key into the checkpoint
    table, the blobs handed over as an Arrow table that points at them (no copy) rather
    than as query parameters: bound as a parameter, one ``INSERT OR REPLACE ... VALUES
    ($p, $s)`` of a 400 MB blob took 21 s and 4.8 GB on a 2-core VM, 2.2-6.6 s and 3.0 GB
    so (q18 without a TTL checkpoints hundreds of MB)."""
    if not blobs:
        return
    # Built from buffers: ``pa.array`` / ``pa.table`` of Python objects import pandas
    # (to look for its types), which the engine keeps out of a run (test_cold_start).
    rows = pa.Table.from_arrays(
        [
            _large(pa.large_string(), [key.encode() for key in blobs]),
            _large(pa.large_binary(), list(blobs.values())),
        ],
        names=["pipeline", "state"],
    )
    with _registered(conn, "_checkpoints", rows):
        conn.execute(
            f"{verb} INTO {CHECKPOINT_TABLE} (pipeline, state) SELECT pipeline, state"
            " FROM _checkpoints"
        )


def _without_values(err: duckdb.Error) -> duckdb.Error:
    """``err`` (same class) with the literals DuckDB quotes in its message replaced: a
    failed conversion names the row's value ("Could not convert string '...' to INT64"),
    and a row's values belong in the output or the dead letters, not in an error that
    goes to logs. What failed, the type and the column stay. From a line's first quote to
    its last: DuckDB does not escape a quote inside the value it quotes."""
    text = re.sub(r"'.*'", "'…'", str(err))
    try:
        return type(err)(text)
    except TypeError:  # a class that wants other arguments: DuckDB's base class
        return duckdb.Error(f"{type(err).__name__}: {text}")


@contextmanager
def _transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """The block in one transaction: committed at its end, rolled back on any error, and
    DuckDB's own errors re-raised without the values they quote (``_without_values``)."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException as err:
        conn.execute("ROLLBACK")
        if isinstance(err, duckdb.Error):
            raise _without_values(err) from None
        raise


@contextmanager
def _registered(conn: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> Iterator[None]:
    """``table`` visible to ``conn``'s queries as ``name`` for the block. When a statement
    in the block fails inside a transaction, DuckDB refuses everything but ROLLBACK,
    unregistering included: that refusal ("Current transaction is aborted") is dropped so
    the statement's own error (a conversion error naming the value, say) reaches the
    caller; the rollback removes the registration with the rest."""
    conn.register(name, table)
    try:
        yield
    except BaseException:
        with suppress(duckdb.TransactionException):
            conn.unregister(name)
        raise
    conn.unregister(name)


def _large(kind: pa.DataType, values: list[bytes]) -> pa.Array:
    """A large_string / large_binary array of ``values`` over one joined buffer (the
    value itself, not a copy, when there is one)."""
    offsets = np.cumsum([0, *map(len, values)], dtype=np.int64)
    data = pa.py_buffer(b"".join(values))
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(offsets), data])
