"""One worker of ``dataflare bench scale`` as a process of its own (``python -m``).

Builds a ``PartitionWorker`` over the given partitions, warms what the first checkpoint
would import, prints ``{"ready": ...}`` and (unless ``--no-wait``) waits for a line on
stdin before it starts, so the measured time starts with every worker of a run ready.
Prints one JSON line per committed checkpoint (``at`` = commit time, seconds since the
epoch) and stops by itself once every partition it owns has committed the topic's end
offset; then one ``final`` line per partition (rows and order-independent digest of
the output when ``--sink digest``) and its own CPU seconds. SIGTERM stops it gracefully.
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--log", required=True, type=Path)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--source", required=True, help="the spec's source name")
    parser.add_argument("--partitions", required=True, help="comma-separated numbers")
    parser.add_argument("--batch-rows", type=int, default=65_536)
    parser.add_argument("--checkpoint-interval", type=float, default=0.25)
    parser.add_argument("--sink", choices=("digest", "spec"), default="digest")
    parser.add_argument("--no-wait", action="store_true")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log = EventLog(args.log)
    ends = log.topic(args.topic).committed_ends()
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
    done: set[int] = set()

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
        if offset is not None and offset >= ends[unit.partition]:
            done.add(unit.partition)
            if done >= set(owned):
                stop.set()

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
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _emit({"cpu_s": round(usage.ru_utime + usage.ru_stime, 3)})


if __name__ == "__main__":
    main()
