"""A Nexmark query over Arrow files into a PostgreSQL or Parquet-dataset sink, run as a
subprocess that the exactly-once tests kill and restart (``python -m``). Prints the
run's summary as one JSON line when it finishes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dataflare_platform.connectors.parquet_dataset import ParquetDatasetSink
from dataflare_platform.connectors.postgres import PostgresSink
from dataflare_platform.engine import Runner, RunnerConfig, Sink
from dataflare_platform.queries.nexmark import BUILDERS, NexmarkSources


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--query", required=True)
    parser.add_argument("--input", required=True, type=Path, help="Nexmark output directory")
    parser.add_argument("--batch-rows", type=int, default=500)
    parser.add_argument("--checkpoint-every", type=int, default=3)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--postgres", nargs=3, metavar=("DSN", "SCHEMA", "TABLE"))
    parser.add_argument("--dataset", nargs=2, metavar=("ROOT", "TIME_COLUMN"))
    args = parser.parse_args()
    sink: Sink
    if args.postgres:
        dsn, schema, table = args.postgres
        sink = PostgresSink(dsn, table, schema_name=schema)
    else:
        root, time_column = args.dataset
        sink = ParquetDatasetSink(root, time_column=time_column)
    src = NexmarkSources.from_paths(
        args.query,
        bids=args.input / "bids",
        persons=args.input / "persons",
        auctions=args.input / "auctions",
    )
    config = RunnerConfig(
        batch_rows=args.batch_rows, checkpoint_every=args.checkpoint_every, rate=args.rate
    )
    result = Runner(BUILDERS[args.query](src, sink), config).run()
    print(json.dumps(result.as_dict()), flush=True)


if __name__ == "__main__":
    main()
