"""Where a pipeline's late and dead-lettered rows went, and how many there are.

The engine hands every row it will not put in the output (``late``: event time behind the
watermark minus allowed lateness; ``dead_letter``: a malformed row or a rejected batch)
to the sink as a *side row* (``engine.sinks.SIDE_SCHEMA``: kind, operator, reason,
payload), committed with the output and checkpoint. Each sink kind keeps them in its
own place: a DuckDB sink in ``<table>_side`` of its file, PostgreSQL in ``<table>_side``,
a Parquet dataset in ``<root>/_dataflare/side/``. ``dataflare dlq`` lists them beside the
dead-letter topics through this module.

DuckDB side tables are read here (read-only: while a run holds the file, the counts are
reported unavailable with the reason); for the other kinds the place is named precisely
and read with that system's own tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataflare_platform.connectors import duckdb as duckdb_connector
from dataflare_platform.errors import ConfigError, DataflareError
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform.streams.spec import PipelineSpec


class SideOutputUnavailableError(DataflareError):
    """The side rows cannot be read here (another kind of sink, or a run holds the file)."""


@dataclass(frozen=True)
class SideOutput:
    pipeline: str
    sink: str  # the sink kind
    where: str  # for a reader: the file and table, or the directory, or the table
    path: Path | None  # the DuckDB file or the dataset directory
    table: str | None  # the side table (DuckDB, PostgreSQL)
    counts: dict[str, int] | None  # rows per kind (late, dead_letter); None: not read
    note: str | None = None  # why counts are None

    @property
    def total(self) -> int | None:
        return None if self.counts is None else sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "sink": self.sink,
            "where": self.where,
            "path": None if self.path is None else str(self.path),
            "table": self.table,
            "counts": self.counts,
            "total": self.total,
            "note": self.note,
        }


def _duckdb_place(spec: PipelineSpec, default_dir: Path) -> tuple[Path, str]:
    path = duckdb_connector.default_path(spec.sink, spec.name, default_dir)
    return path, f"{spec.sink.table}_side"


def side_output(spec: PipelineSpec, default_dir: Path) -> SideOutput:
    """Where the pipeline's side rows are, with counts per kind when readable here."""
    sink = spec.sink
    if sink.kind == "duckdb":
        path, table = _duckdb_place(spec, default_dir)
        where = f"{path} table {table}"
        try:
            counts = _duckdb_counts(path, table)
        except SideOutputUnavailableError as err:
            return SideOutput(spec.name, sink.kind, where, path, table, None, str(err))
        return SideOutput(spec.name, sink.kind, where, path, table, counts)
    if sink.kind == "postgres":
        table = f"{sink.schema_name}.{sink.table}_side"
        note = "in PostgreSQL: SELECT kind, count(*) FROM " + table + " GROUP BY kind"
        return SideOutput(
            spec.name, sink.kind, f"PostgreSQL table {table}", None, table, None, note
        )
    if sink.kind == "parquet_dataset":
        directory = Path(sink.root) / "_dataflare" / "side"
        note = "Arrow IPC files side-*.arrow (committed ones are listed in the manifest)"
        return SideOutput(spec.name, sink.kind, str(directory), directory, None, None, note)
    note = f"a {sink.kind} sink does not keep side rows (the run's metadata counts them)"
    return SideOutput(spec.name, sink.kind, "not kept", None, None, None, note)


def _connect(path: Path):
    import duckdb

    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.OperationalError as err:  # IOException: a run holds it for writing
        raise SideOutputUnavailableError(f"{path} is in use ({err})") from None


def _has_table(conn, table: str) -> bool:
    tables = conn.sql("SELECT table_name FROM information_schema.tables").fetchall()
    return (table,) in tables


def _duckdb_counts(path: Path, table: str) -> dict[str, int]:
    if not path.exists():
        return {}
    with _connect(path) as conn:
        if not _has_table(conn, table):
            return {}
        rows = conn.execute(
            f"SELECT kind, count(*)::BIGINT FROM {quote_identifier(table)} GROUP BY kind"
        ).fetchall()
    return {str(kind): int(n) for kind, n in sorted(rows)}


def side_rows(
    spec: PipelineSpec,
    default_dir: Path,
    limit: int = 20,
    start: int = 0,
    reason_like: str | None = None,
    full: bool = False,
) -> list[dict[str, Any]]:
    """Side rows of a DuckDB sink in commit order, from row ``start`` (row numbers are the
    table's row ids), each with ``row``, ``kind``, ``operator``, ``reason`` and the
    payload (``full``) or its first 200 characters."""
    if spec.sink.kind != "duckdb":
        place = side_output(spec, default_dir)
        raise SideOutputUnavailableError(
            f"pipeline {spec.name!r}: side rows of a {spec.sink.kind} sink are at "
            f"{place.where} ({place.note})"
        )
    path, table = _duckdb_place(spec, default_dir)
    if not path.exists():
        return []
    payload = "payload" if full else "left(payload, 200)"
    where = "rowid >= $start"
    params: dict[str, Any] = {"start": start, "limit": limit}
    if reason_like is not None:
        where += " AND reason ILIKE $reason"
        params["reason"] = reason_like
    with _connect(path) as conn:
        if not _has_table(conn, table):
            return []
        rows = conn.execute(
            f"SELECT rowid, kind, operator, reason, {payload} FROM {quote_identifier(table)}"
            f" WHERE {where} ORDER BY rowid LIMIT $limit",
            params,
        ).fetchall()
    names = ("row", "kind", "operator", "reason", "payload")
    return [dict(zip(names, r, strict=True)) for r in rows]


def side_row(spec: PipelineSpec, default_dir: Path, row: int) -> dict[str, Any]:
    """One side row, whole; ConfigError naming ``--row`` when there is none."""
    found = side_rows(spec, default_dir, limit=1, start=row, full=True)
    if not found or found[0]["row"] != row:
        raise ConfigError(f"pipeline {spec.name!r}", [("--row", f"no side row {row}")])
    return found[0]
