"""Small in-memory Nexmark data sets for engine and query tests."""

import duckdb
import numpy as np
import pyarrow as pa

from dataflare_platform.datagen import SCHEMAS, NexmarkConfig, NexmarkGenerator


def nexmark_tables(config: NexmarkConfig) -> dict[str, pa.Table]:
    gen = NexmarkGenerator(config)
    parts = [gen.chunk(i).tables(decode=True) for i in gen.chunks()]
    return {kind: pa.concat_tables([p[kind] for p in parts]) for kind in SCHEMAS}


def skewed_tables(seed: int, late_fraction: float, max_late_ms: int, **settings) -> dict:
    """20k events of the generator's ``skewed`` shape at 200 events/s (100 s of event
    time), ``late_fraction`` of them up to ``max_late_ms`` late."""
    config = NexmarkConfig(
        events=20_000,
        events_per_second=200.0,
        seed=seed,
        shape="skewed",
        late_fraction=late_fraction,
        max_out_of_order_ms=max_late_ms,
        **settings,
    )
    return nexmark_tables(config)


def shuffle_within(table: pa.Table, block: int, seed: int = 0) -> pa.Table:
    """Permute rows inside consecutive blocks: more disorder, bounded in time."""
    rng = np.random.default_rng(seed)
    order = np.arange(table.num_rows)
    for start in range(0, table.num_rows, block):
        rng.shuffle(order[start : start + block])
    return table.take(order)


def truth_connection(tables: dict[str, pa.Table]) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    for kind, table in tables.items():
        conn.register(kind, table)
    return conn
