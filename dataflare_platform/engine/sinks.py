"""In-memory sinks and the uniform shape of side rows. The sink contract and the
transactional base live in ``engine.io``; sinks to external systems (files, DuckDB,
PostgreSQL, ...) are connectors (``dataflare_platform.connectors``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from dataflare_platform.engine.checkpoint import Checkpoint
from dataflare_platform.engine.io import Sink, TransactionalSink
from dataflare_platform.engine.operators.base import WM_COL

__all__ = ["SIDE_SCHEMA", "CollectSink", "NullSink", "Sink", "TransactionalSink", "side_rows"]

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


class NullSink(Sink):
    """Counts and drops output (throughput benchmarks)."""

    def __init__(self) -> None:
        self.rows = 0
        self.side_rows = 0

    def write(self, output: pl.DataFrame | None, side: pl.DataFrame | None) -> None:
        self.rows += 0 if output is None else output.height
        self.side_rows += 0 if side is None else side.height


@dataclass
class CollectSink(TransactionalSink):
    """Keeps everything in memory, committed checkpoints included (tests, small runs)."""

    outputs: list[pl.DataFrame] = field(default_factory=list)
    sides: list[pl.DataFrame] = field(default_factory=list)
    checkpoint: Checkpoint | None = None

    def open(self, pipeline: str) -> Checkpoint | None:
        self.discard_pending()
        return self.checkpoint

    def commit_batch(
        self, output: pl.DataFrame | None, side: pl.DataFrame | None, checkpoint: Checkpoint
    ) -> None:
        if output is not None:
            self.outputs.append(output)
        if side is not None:
            self.sides.append(side)
        self.checkpoint = Checkpoint.decode(checkpoint.encode())

    def result(self) -> pl.DataFrame:
        return pl.concat(self.outputs, how="vertical_relaxed") if self.outputs else pl.DataFrame()

    def side(self, kind: str | None = None) -> pl.DataFrame:
        if not self.sides:
            return pl.DataFrame(schema=SIDE_SCHEMA)
        rows = pl.concat(self.sides)
        return rows if kind is None else rows.filter(pl.col("kind") == kind)
