"""Running a Nexmark query into a DuckDB table or a Parquet dataset, exactly once across
restarts."""

from __future__ import annotations

from pathlib import Path

from dataflare_platform.connectors.duckdb import DuckDBSink
from dataflare_platform.connectors.parquet_dataset import ParquetDatasetSink
from dataflare_platform.engine import Runner, RunnerConfig, RunResult
from dataflare_platform.queries.nexmark import BUILDERS, SPECS, UPSERT_KEYS, NexmarkSources


def run_to_duckdb(
    query: str,
    database: Path,
    bids: Path | None = None,
    persons: Path | None = None,
    auctions: Path | None = None,
    table: str | None = None,
    batch_rows: int = 10_000,
    checkpoint_every: int = 10,
    rate: float | None = None,
) -> RunResult:
    """Run (or resume) ``query``; its output, side output and checkpoint share one DuckDB
    transaction per commit, so a killed run restarted with the same arguments ends with
    exactly the table an uninterrupted run writes."""
    sources = NexmarkSources.from_paths(query, bids, persons, auctions)
    sink = DuckDBSink(database, table or f"nexmark_{query}", upsert_keys=UPSERT_KEYS.get(query))
    pipeline = BUILDERS[query](sources, sink)
    config = RunnerConfig(batch_rows=batch_rows, checkpoint_every=checkpoint_every, rate=rate)
    return Runner(pipeline, config).run()


def run_to_dataset(
    query: str,
    root: Path,
    bids: Path | None = None,
    persons: Path | None = None,
    auctions: Path | None = None,
    batch_rows: int = 10_000,
    checkpoint_every: int = 10,
    rate: float | None = None,
) -> RunResult:
    """Run (or resume) ``query`` into the Parquet dataset at ``root``: the query's own
    dataset sink (q10: partitioned by date and hour), else one partitioned by date. The
    dataset's manifest holds the checkpoint, so a killed run restarted with the same
    arguments ends with each row exactly once."""
    sources = NexmarkSources.from_paths(query, bids, persons, auctions)
    make = SPECS[query].dataset
    sink = make(root) if make is not None else ParquetDatasetSink(root, "date_time")
    pipeline = BUILDERS[query](sources, sink)
    config = RunnerConfig(batch_rows=batch_rows, checkpoint_every=checkpoint_every, rate=rate)
    try:
        return Runner(pipeline, config).run()
    finally:
        sink.close()
