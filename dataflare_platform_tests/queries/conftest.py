import duckdb
import numpy as np
import pyarrow as pa
import pytest

from dataflare_platform.datagen import SCHEMAS, NexmarkConfig, NexmarkGenerator


def nexmark_tables(config: NexmarkConfig) -> dict[str, pa.Table]:
    gen = NexmarkGenerator(config)
    parts = [gen.chunk(i).tables(decode=True) for i in gen.chunks()]
    return {kind: pa.concat_tables([p[kind] for p in parts]) for kind in SCHEMAS}


def shuffle_within(table: pa.Table, block: int, seed: int = 0) -> pa.Table:
    """Permute rows inside consecutive blocks: more disorder, bounded in time."""
    rng = np.random.default_rng(seed)
    order = np.arange(table.num_rows)
    for start in range(0, table.num_rows, block):
        rng.shuffle(order[start : start + block])
    return table.take(order)


@pytest.fixture(scope="session")
def small_nexmark() -> dict[str, pa.Table]:
    # 3000 events at 100 events/s: 30 s of event time, several 10 s windows.
    return nexmark_tables(NexmarkConfig(events=3_000, events_per_second=100.0, seed=3))


@pytest.fixture(scope="session")
def medium_nexmark() -> dict[str, pa.Table]:
    # 60k events at 500 events/s: 2 minutes of event time, ~1100 persons/auctions.
    return nexmark_tables(NexmarkConfig(events=60_000, events_per_second=500.0, seed=5))


def truth_connection(tables: dict[str, pa.Table]) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    for kind, table in tables.items():
        conn.register(kind, table)
    return conn
