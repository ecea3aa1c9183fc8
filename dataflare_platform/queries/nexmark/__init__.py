"""The Nexmark queries on the engine's public API, with their DuckDB ground truth.

Each builder takes the sources it needs and a sink and returns a ready pipeline. The
SQL in ``GROUND_TRUTH`` is the same query as a one-shot batch over all events: tests
compare against it, and the benchmark times it as the baseline. Queries are grouped in
modules (``classic``: q0–q8 …), each exposing ``SPECS``; this module merges them.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from dataflare_platform.queries.nexmark import auctions, classic, keyed, streams
from dataflare_platform.queries.nexmark.spec import (
    TRUTH_PRELUDE,
    WATERMARK_DELAY_MS,
    NexmarkSources,
    QuerySpec,
)


def _merge(*modules) -> dict[str, QuerySpec]:
    specs: dict[str, QuerySpec] = {}
    for module in modules:
        for name, spec in module.SPECS.items():
            assert name not in specs, f"Nexmark query {name} defined twice"
            specs[name] = spec
    return dict(sorted(specs.items(), key=lambda item: int(item[0][1:])))


SPECS: dict[str, QuerySpec] = _merge(classic, auctions, keyed, streams)
QUERIES: tuple[str, ...] = tuple(SPECS)
COLUMNS = {name: spec.columns for name, spec in SPECS.items()}
BUILDERS = {name: spec.build for name, spec in SPECS.items()}
GROUND_TRUTH = {name: spec.truth for name, spec in SPECS.items()}
UPSERT_KEYS = {name: spec.upsert_keys for name, spec in SPECS.items() if spec.upsert_keys}


def ground_truth(conn: duckdb.DuckDBPyConnection, query: str) -> pa.Table:
    """Run ``query``'s one-shot SQL on ``conn`` (tables bids/persons/auctions)."""
    conn.execute(TRUTH_PRELUDE)
    return conn.sql(GROUND_TRUTH[query]).to_arrow_table()


__all__ = [
    "BUILDERS",
    "COLUMNS",
    "GROUND_TRUTH",
    "QUERIES",
    "SPECS",
    "TRUTH_PRELUDE",
    "UPSERT_KEYS",
    "WATERMARK_DELAY_MS",
    "NexmarkSources",
    "QuerySpec",
    "ground_truth",
]
