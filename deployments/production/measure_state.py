"""State per key, checkpoint size and checkpoint time (docs/capacity.md): a keyed
one-hour tumbling window (count and sum per auction, the shape of most per-key state)
over KEYS distinct keys, run until every key has state, then one checkpoint taken,
encoded and committed to a DuckDB sink, each timed. Prints one JSON document.

    .venv/bin/python deployments/production/measure_state.py [KEYS ...]
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from dataflare_platform.connectors.duckdb import DuckDBSinkSettings, open_sink
from dataflare_platform.connectors.settings import OpenContext
from dataflare_platform.engine import Pipeline, Runner, RunnerConfig, TableSource
from dataflare_platform.engine.aggregations import count, sum_
from dataflare_platform.engine.pipeline import tumbling


def measure(keys: int, folder: Path) -> dict[str, float]:
    rows = keys * 3
    n = pl.int_range(0, rows, eager=True)
    bids = pl.DataFrame(
        {
            "auction": (n % keys).cast(pl.Int64),
            "price": (n * 7 % 1000).cast(pl.Int64),
            "date_time": (n * 1000 // rows).cast(pl.Datetime("ms")),  # all in one hour
        }
    ).to_arrow()
    settings = DuckDBSinkSettings(path=str(folder / f"k{keys}.duckdb"), table="out")
    sink = open_sink(settings, OpenContext("measure"))
    pipeline = Pipeline(f"state_{keys}")
    pipeline.source(TableSource.single("bids", bids)).key_by("auction").window(tumbling("1h")).agg(
        count("n"), sum_("price", "total")
    ).sink(sink)
    runner = Runner(pipeline, RunnerConfig(batch_rows=100_000, checkpoint_every=1_000_000))
    # Stopped one row before the end: not finished, so no window closed and every key
    # holds state in the checkpoint the run leaves.
    result = runner.run(until={"bids/0": rows - 1})
    checkpoint = result.checkpoint
    assert not result.finished
    t0 = time.perf_counter()
    blob = checkpoint.encode()
    encode_s = time.perf_counter() - t0
    state_rows = sum(t.num_rows for tables in checkpoint.states.values() for t in tables.values())
    sink.open(pipeline.name)
    t0 = time.perf_counter()
    sink.commit(checkpoint)
    commit_s = time.perf_counter() - t0
    sink.close()
    return {
        "keys": keys,
        "state_rows": state_rows,
        "checkpoint_bytes": len(blob),
        "bytes_per_key": round(len(blob) / keys, 1),
        "encode_ms": round(encode_s * 1000, 2),
        "duckdb_commit_ms": round(commit_s * 1000, 2),
    }


def main() -> None:
    counts = [int(a) for a in sys.argv[1:]] or [10_000, 100_000, 1_000_000]
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps([measure(k, Path(folder)) for k in counts], indent=2))


if __name__ == "__main__":
    main()
