"""Shared pieces of the connector tests: Nexmark sources and runs, comparison, and the
command of ``crash_worker`` (driven by ``dataflare_platform_tests.processes``)."""

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


def run_q1(source, sink: CollectSink | None = None, until: dict[str, int] | None = None):
    """Nexmark q1 over ``source``: its output so far, sorted, for comparisons. With
    ``until`` the run stops there (a checkpoint in ``sink``) and a later run with the
    same sink resumes from it."""
    sink = sink if sink is not None else CollectSink()
    config = RunnerConfig(batch_rows=500, checkpoint_every=3)
    result = Runner(BUILDERS["q1"](NexmarkSources(bids=source), sink), config).run(until=until)
    assert result.finished == (until is None)
    out = sink.result()
    return out.sort(out.columns) if out.height else out


def worker(*args: str) -> list[str]:
    return [sys.executable, "-m", "dataflare_platform_tests.connectors.crash_worker", *args]
