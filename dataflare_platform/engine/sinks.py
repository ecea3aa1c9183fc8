"""Sinks. A sink receives each batch's output, late rows and dead letters, and is asked
to commit at checkpoints. A transactional sink writes everything since the last commit
together with the checkpoint in one transaction: that is what makes a restart after a
crash produce exactly the output of an uninterrupted run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from dataflare_platform.engine.checkpoint import Checkpoint
from dataflare_platform.engine.operators import WM_COL

SIDE_SCHEMA = {"kind": pl.String, "operator": pl.String, "reason": pl.String, "payload": pl.String}


def side_rows(rows: pl.DataFrame, kind: str, operator: str, reason: str) -> pl.DataFrame:
    """Late or dead-lettered rows in one uniform shape: what, where, why, and the row as
    JSON, so rows of any schema can be kept, counted and queried together."""
    rows = rows.drop(WM_COL, strict=False)
    payload = (
        rows.select(pl.struct(pl.all()).struct.json_encode().alias("payload"))
        if rows.width
        else pl.DataFrame({"payload": [""] * rows.height})
    )
    return payload.select(
        pl.lit(kind).alias("kind"),
        pl.lit(operator).alias("operator"),
        pl.lit(reason).alias("reason"),
        pl.col("payload"),
    )


class Sink:
    transactional: bool = False

    def open(self, pipeline: str) -> Checkpoint | None:
        """Prepare and return the last committed checkpoint, if any."""
        return None

    def write(self, output: pl.DataFrame | None, side: pl.DataFrame | None) -> None:
        raise NotImplementedError

    def commit(self, checkpoint: Checkpoint) -> None:
        return None

    def close(self) -> None:
        return None


class NullSink(Sink):
    """Counts and drops output (throughput benchmarks)."""

    def __init__(self) -> None:
        self.rows = 0
        self.side_rows = 0

    def write(self, output: pl.DataFrame | None, side: pl.DataFrame | None) -> None:
        self.rows += 0 if output is None else output.height
        self.side_rows += 0 if side is None else side.height


@dataclass
class CollectSink(Sink):
    """Keeps everything in memory, committed checkpoints included (tests, small runs)."""

    transactional: bool = True
    outputs: list[pl.DataFrame] = field(default_factory=list)
    sides: list[pl.DataFrame] = field(default_factory=list)
    checkpoint: Checkpoint | None = None
    _pending: list[tuple[pl.DataFrame | None, pl.DataFrame | None]] = field(default_factory=list)

    def open(self, pipeline: str) -> Checkpoint | None:
        self._pending.clear()
        return self.checkpoint

    def write(self, output: pl.DataFrame | None, side: pl.DataFrame | None) -> None:
        self._pending.append((output, side))

    def commit(self, checkpoint: Checkpoint) -> None:
        for output, side in self._pending:
            if output is not None and output.height:
                self.outputs.append(output)
            if side is not None and side.height:
                self.sides.append(side)
        self._pending.clear()
        self.checkpoint = Checkpoint.decode(checkpoint.encode())

    def result(self) -> pl.DataFrame:
        return pl.concat(self.outputs, how="vertical_relaxed") if self.outputs else pl.DataFrame()

    def side(self, kind: str | None = None) -> pl.DataFrame:
        if not self.sides:
            return pl.DataFrame(schema=SIDE_SCHEMA)
        rows = pl.concat(self.sides)
        return rows if kind is None else rows.filter(pl.col("kind") == kind)


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


class DuckDBSink(Sink):
    """Output table, side-output table and checkpoint in one DuckDB file, all written in
    one transaction per commit (exactly-once with the runner's checkpoints).

    ``upsert_keys`` turns the output table into a keyed table holding each key's newest
    row (for updating results such as a running average per category).
    """

    transactional = True

    def __init__(self, path: Path, table: str, upsert_keys: list[str] | None = None) -> None:
        self.path = Path(path)
        self.table = table
        self.side_table = f"{table}_side"
        self.upsert_keys = upsert_keys
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._pipeline = ""
        self._outputs: list[pl.DataFrame] = []
        self._sides: list[pl.DataFrame] = []

    def open(self, pipeline: str) -> Checkpoint | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = duckdb.connect(str(self.path))
        self._pipeline = pipeline
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS dataflare_checkpoints ("
            " pipeline VARCHAR PRIMARY KEY, state BLOB NOT NULL,"
            " committed_at TIMESTAMP DEFAULT current_timestamp)"
        )
        self._conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{self.side_table}" (kind VARCHAR, operator VARCHAR,'
            " reason VARCHAR, payload VARCHAR)"
        )
        rows = self._conn.execute(
            "SELECT state FROM dataflare_checkpoints WHERE pipeline = $p", {"p": pipeline}
        ).fetchall()
        return Checkpoint.decode(bytes(rows[0][0])) if rows else None

    def write(self, output: pl.DataFrame | None, side: pl.DataFrame | None) -> None:
        if output is not None and output.height:
            self._outputs.append(output)
        if side is not None and side.height:
            self._sides.append(side)

    def commit(self, checkpoint: Checkpoint) -> None:
        conn = self._conn
        assert conn is not None, "open() first"
        state = checkpoint.encode()
        conn.execute("BEGIN TRANSACTION")
        try:
            if self._outputs:
                out = pl.concat(self._outputs, how="vertical_relaxed")
                if self.upsert_keys:  # only each key's newest row since the last commit
                    out = out.unique(subset=self.upsert_keys, keep="last", maintain_order=True)
                self._write_output(conn, out.to_arrow())
            if self._sides:
                conn.register("_side", pl.concat(self._sides).to_arrow())
                conn.execute(f'INSERT INTO "{self.side_table}" SELECT * FROM _side')
                conn.unregister("_side")
            conn.execute(
                "INSERT OR REPLACE INTO dataflare_checkpoints (pipeline, state) VALUES ($p, $s)",
                {"p": self._pipeline, "s": state},
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._outputs.clear()
        self._sides.clear()

    def _write_output(self, conn: duckdb.DuckDBPyConnection, out: pa.Table) -> None:
        conn.register("_out", out)
        try:
            conn.execute(f'CREATE TABLE IF NOT EXISTS "{self.table}" AS SELECT * FROM _out LIMIT 0')
            if self.upsert_keys:
                keys = ", ".join(f'"{k}"' for k in self.upsert_keys)
                conn.execute(
                    f'DELETE FROM "{self.table}" WHERE ({keys}) IN (SELECT ({keys}) FROM _out)'
                )
            conn.execute(f'INSERT INTO "{self.table}" SELECT * FROM _out')
        finally:
            conn.unregister("_out")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
