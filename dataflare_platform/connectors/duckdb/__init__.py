"""DuckDB: a table (plus ``<table>_side`` and the checkpoint) in one DuckDB file, written
exactly once per checkpoint.

    sink: {kind: duckdb, table: hot_items}                 # <streams dir>/<pipeline>.duckdb
    sink: {kind: duckdb, path: out.duckdb, table: q4, upsert_keys: [category]}

Without ``path`` the file is one per pipeline under the project home's streams folder:
DuckDB has one writer per file, so pipelines never share one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from dataflare_platform.connectors.duckdb.sink import CHECKPOINT_TABLE, DuckDBSink
from dataflare_platform.connectors.settings import (
    SQL_COLUMN,
    SQL_IDENTIFIER,
    ConnectorSettings,
    OpenContext,
)
from dataflare_platform.errors import ConfigError

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "CHECKPOINT_TABLE",
    "DuckDBSink",
    "DuckDBSinkSettings",
    "default_path",
    "open_sink",
    "reading",
]

# What DuckDB says when a process opens read-only a file it already holds read-write.
_SAME_PROCESS_WRITER = "different configuration"


@contextmanager
def reading(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to read ``path``: read-only, unless this process already holds the
    file read-write (a continuous run's sink evaluating its own asset checks), where
    DuckDB refuses a second configuration; the connection then shares the writer's
    database instance and sees what it committed. Callers only read through it."""
    import duckdb

    try:
        conn = duckdb.connect(str(path), read_only=True)
    except duckdb.ConnectionException as err:
        if _SAME_PROCESS_WRITER not in str(err):
            raise
        conn = duckdb.connect(str(path))
    try:
        yield conn
    finally:
        conn.close()


class DuckDBSinkSettings(ConnectorSettings):
    kind: Literal["duckdb"] = "duckdb"
    path: Path | None = Field(None, description="The DuckDB file; default one per pipeline.")
    table: str = Field(pattern=SQL_IDENTIFIER, max_length=120)
    upsert_keys: list[Annotated[str, Field(pattern=SQL_COLUMN)]] | None = Field(None, min_length=1)


def default_path(settings: DuckDBSinkSettings, pipeline: str, default_dir: Path) -> Path:
    return settings.path if settings.path is not None else default_dir / f"{pipeline}.duckdb"


def open_sink(settings: DuckDBSinkSettings, context: OpenContext) -> DuckDBSink:
    if settings.path is None and context.default_dir is None:
        raise ConfigError(
            f"pipeline {context.pipeline!r}",
            [("sink.path", "no path: give one, or run it where one is chosen")],
        )
    path = default_path(settings, context.pipeline, context.default_dir or Path())
    path.parent.mkdir(parents=True, exist_ok=True)
    return DuckDBSink(path, settings.table, settings.upsert_keys)
