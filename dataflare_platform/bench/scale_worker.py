"""One worker of ``dataflare bench scale`` as a process of its own (``python -m``).

Builds a ``PartitionWorker`` over the given partitions, warms what the first checkpoint
would import, prints ``{"ready": ...}`` and (unless ``--no-wait``) waits for a line on
stdin before it starts, so the measured time starts with every worker of a run ready.
Prints one JSON line per committed checkpoint (``at`` = commit time, seconds since the
epoch) and stops by itself once every partition it owns has committed the end offset
given in ``--ends-file`` (read once it exists: a run may start before the last events
are appended); then one ``final`` line per partition (rows and order-independent digest
of the output with ``--sink digest``) and its CPU seconds (all, and since the start
signal). SIGTERM stops it gracefully.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl

from dataflare_platform.engine import RunnerConfig
from dataflare_platform.engine.checkpoint import Checkpoint
from dataflare_platform.engine.io import TransactionalSink
from dataflare_platform.events.log import EventLog
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform.streams.workers import PartitionWorker


class DigestSink(TransactionalSink):
    """Keeps nothing but the committed row count and an order-independent digest of the
    rows (the wrapping sum of each row's hash), with checkpoints in memory: a sink that
    several processes may write side by side, whose output can still be compared."""

    def __init__(self) -> None:
        self.rows = 0
        self.digest = np.uint64(0)
        self.checkpoint: Checkpoint | None = None

    def open(self, pipeline: str) -> Checkpoint | None:
        self.discard_pending()
        return self.checkpoint

    def commit_batch(
        self, output: pl.DataFrame | None, side: pl.DataFrame | None, checkpoint: Checkpoint
    ) -> None:
        if output is not None and output.height:
            hashes = output.hash_rows(seed=0).to_numpy()
            self.digest = np.add(self.digest, hashes.sum(dtype=np.uint64), dtype=np.uint64)
            self.rows += output.height
        self.checkpoint = checkpoint


def _emit(item: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(item) + "\n")
    sys.stdout.flush()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--log", required=True, type=Path)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--source", required=True, help="the spec's source name")
    parser.add_argument("--partitions", required=True, help="comma-separated numbers")
    parser.add_argument("--batch-rows", type=int, default=65_536)
    parser.add_argument("--checkpoint-interval", type=float, default=0.25)
    parser.add_argument("--sink", choices=("digest", "spec"), default="digest")
    parser.add_argument("--no-wait", action="store_true")
    parser.add_argument(
        "--ends-file", required=True, type=Path, help="JSON end offset per partition to stop at"
    )
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log = EventLog(args.log)
    owned = [int(p) for p in args.partitions.split(",")]
    sinks: dict[int, DigestSink] = {}

    def sink_for(partition: int) -> DigestSink:
        sinks[partition] = DigestSink()
        return sinks[partition]

    worker = PartitionWorker(
        PipelineSpec.from_yaml(args.spec),
        log,
        args.dir,
        owned,
        config=RunnerConfig(
            batch_rows=args.batch_rows, checkpoint_interval_s=args.checkpoint_interval
        ),
        sinks=sink_for if args.sink == "digest" else None,
    )
    # The first checkpoint of a run imports pandas (≈ 0.9 s here): part of start-up.
    import pandas  # noqa: F401

    _emit({"ready": time.time(), "pid": os.getpid()})
    if not args.no_wait:
        sys.stdin.readline()
    cpu_go = _cpu()
    last: dict[int, int] = {}

    def on_report(unit) -> None:
        offset = unit.report.offsets.get(f"{args.source}/{unit.partition}")
        _emit(
            {
                "partition": unit.partition,
                "offset": offset,
                "events_out": unit.report.events_out,
                "at": unit.report.checkpoint_at,
            }
        )
        if offset is not None:
            last[unit.partition] = offset

    def watch() -> None:
        """Stop once every owned partition has committed its end (as soon as known)."""
        ends: dict[str, int] = {}
        while not stop.wait(0.02):
            if not ends and args.ends_file.exists():
                ends = json.loads(args.ends_file.read_text())
            if ends and all(last.get(p, -1) >= ends[str(p)] for p in owned):
                stop.set()

    threading.Thread(target=watch, daemon=True).start()
    results = worker.run(stop, on_report, poll_s=0.02)
    for partition, result in sorted(results.items()):
        sink = sinks.get(partition)
        _emit(
            {
                "final": partition,
                "events_in": None if result is None else result.metrics.events_in,
                "rows": None if sink is None else sink.rows,
                "digest": None if sink is None else str(int(sink.digest)),
            }
        )
    _emit({"cpu_s": round(_cpu(), 3), "run_cpu_s": round(_cpu() - cpu_go, 3)})


if __name__ == "__main__":
    main()
