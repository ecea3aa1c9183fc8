"""One partition-parallel worker as a process of its own (``python -m``), for the tests
that kill workers: runs ``PartitionWorker`` over the given partitions until SIGTERM, then
stops gracefully and prints one JSON line per unit result."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path

from dataflare_platform.engine import RunnerConfig
from dataflare_platform.events.log import EventLog
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform.streams.workers import PartitionWorker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--log", required=True, type=Path)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--partitions", required=True, help="comma-separated numbers")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker = PartitionWorker(
        PipelineSpec.from_yaml(args.spec),
        EventLog(args.log),
        args.dir,
        [int(p) for p in args.partitions.split(",")],
        config=RunnerConfig(batch_rows=200, checkpoint_interval_s=0.2),
    )

    def report(unit) -> None:
        print(json.dumps({"partition": unit.partition, "offsets": unit.report.offsets}), flush=True)

    results = worker.run(stop, report)
    for partition, result in results.items():
        offsets = None if result is None else result.checkpoint.offsets
        print(json.dumps({"partition": partition, "final": offsets}), flush=True)


if __name__ == "__main__":
    main()
