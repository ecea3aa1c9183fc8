"""Shared pieces of the sink tests: Nexmark sources, comparison, and the command of
``crash_worker`` (driven by ``dataflare_platform_tests.processes.kill_until_done``)."""

from __future__ import annotations

import sys

import polars as pl
import pyarrow as pa

from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, TableSource
from dataflare_platform.queries.nexmark import BUILDERS, COLUMNS, NexmarkSources


def sources(query: str, tables: dict[str, pa.Table]) -> NexmarkSources:
    return NexmarkSources(
        **{k: TableSource.single(k, tables[k].select(c)) for k, c in COLUMNS[query].items()}
    )


def collect(query: str, tables: dict[str, pa.Table], config: RunnerConfig) -> pl.DataFrame:
    sink = CollectSink()
    Runner(BUILDERS[query](sources(query, tables), sink), config).run()
    return sink.result()


def same_rows(got: pl.DataFrame, expected: pl.DataFrame) -> bool:
    """Equal as multisets of rows, after casting ``got`` to ``expected``'s column types
    (a database may hand timestamps back in microseconds)."""
    got = got.select(expected.columns).cast(dict(expected.schema))
    return got.sort(got.columns).equals(expected.sort(expected.columns))


def worker(*args: str) -> list[str]:
    return [sys.executable, "-m", "dataflare_platform_tests.connectors.crash_worker", *args]
