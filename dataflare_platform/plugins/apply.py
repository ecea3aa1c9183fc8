"""Run a plugin over a whole table outside a pipeline (``dataflare plugin run``, assets):
batch by batch, a failing batch dead-lettered with its reason and the rest processed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from dataflare_platform.errors import BatchRejectedError, CorruptInputError, InvalidInputError
from dataflare_platform.plugins.runtime import Plugin

READERS = {
    ".parquet": pl.read_parquet,
    ".pq": pl.read_parquet,
    ".arrow": pl.read_ipc,
    ".ipc": pl.read_ipc,
    ".feather": pl.read_ipc,
    ".csv": pl.read_csv,
}


@dataclass
class PluginRun:
    output: pl.DataFrame
    dead_letters: pl.DataFrame  # the input rows of failed batches, with a ``reason`` column
    batches: int = 0
    failed_batches: int = 0
    reasons: list[str] = field(default_factory=list)
    seconds_in_plugin: float = 0.0


def run_batches(plugin: Plugin, table: pl.DataFrame, batch_rows: int = 65_536) -> PluginRun:
    """``plugin`` applied to ``table`` in batches of ``batch_rows`` rows."""
    if batch_rows < 1:
        raise InvalidInputError("batch_rows must be at least 1")
    outputs: list[pl.DataFrame] = []
    dead: list[pl.DataFrame] = []
    reasons: list[str] = []
    before = plugin.stats["seconds"]
    batches = 0
    for start in range(0, max(table.height, 1), batch_rows):
        batch = table.slice(start, batch_rows)
        batches += 1
        try:
            outputs.append(plugin(batch))
        except BatchRejectedError as err:
            reasons.append(str(err))
            dead.append(batch.with_columns(pl.lit(str(err)).alias("reason")))
    if not outputs:  # every batch failed: an empty output, with the plugin's schema if it can
        try:
            outputs.append(plugin(table.clear()))
        except BatchRejectedError:
            outputs.append(table.clear())
    empty_dead = table.clear().with_columns(pl.lit(None, pl.String).alias("reason"))
    return PluginRun(
        output=pl.concat(outputs, how="vertical_relaxed"),
        dead_letters=pl.concat(dead) if dead else empty_dead,
        batches=batches,
        failed_batches=len(reasons),
        reasons=reasons,
        seconds_in_plugin=plugin.stats["seconds"] - before,
    )


def read_table(path: Path | str) -> pl.DataFrame:
    """A Parquet, Arrow IPC (``.arrow``/``.ipc``/``.feather``) or CSV file."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise CorruptInputError(path, f"unknown format {path.suffix!r}; use {sorted(READERS)}")
    if not path.is_file():
        raise CorruptInputError(path, "no such file")
    try:
        return reader(path)
    except Exception as err:  # polars raises several error types for unreadable files
        raise CorruptInputError(path, f"not a readable {path.suffix[1:]} file: {err}") from None
