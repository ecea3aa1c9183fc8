"""One worker of ``dataflare bench scale`` as a process of its own (``python -m``).

Builds a ``PartitionWorker`` over the given partitions, warms what the first checkpoint
would import, prints ``{"ready": ...}`` and (unless ``--no-wait``) waits for a line on
stdin before it starts, so the measured time starts with every worker of a run ready.
Prints one JSON line per committed checkpoint (``at`` = commit time, seconds since the
epoch) and stops by itself once every partition it owns has committed the end offset
given in ``--ends-file`` (read once it exists: a run may start before the last events
are appended); then one ``final`` line per partition (rows and order-independent digest
of the output with ``--sink digest``, and the unit's engine counters: seconds in its
operators, waiting for input, blocked on a full queue) and its CPU seconds (all, and since
the start signal, and since the start signal per thread role: the units' source, operator
and sink threads, Polars' native pool; read from ``/proc/self/task``). The ``ready`` line
gives the CPUs the process may run on and the size of Polars' thread pool (the benchmark's
per-core mode pins the process and sets ``POLARS_MAX_THREADS=1``). SIGTERM stops it
gracefully.
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


_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _role(name: str | None) -> str:
    """What a thread of this process does, from its Python name (``engine.runner``,
    ``streams.continuous``, ``streams.workers``); threads Python did not start are the
    native pools (Polars/Rayon, Arrow)."""
    if name is None:
        return "native pool (polars, arrow)"
    if name == "df-source":
        return "source (read, arrow to polars)"
    if name == "df-sink":
        return "sink (digest, commit)"
    if name.startswith("df-continuous-"):
        return "operators"
    if name == "MainThread":
        return "main"
    return "other python"


class ThreadCpu:
    """CPU seconds per thread (``/proc/self/task/<tid>/stat`` utime + stime), sampled
    often enough that a thread's last value is kept after it has ended, and the CPUs
    every thread was allowed to run on."""

    def __init__(self) -> None:
        self.last: dict[int, tuple[str, float]] = {}
        self.base: dict[int, float] = {}
        self.cpus: set[int] = set()

    def sample(self) -> None:
        names = {t.native_id: t.name for t in threading.enumerate()}
        root = Path("/proc/self/task")
        for entry in root.iterdir():
            tid = int(entry.name)
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                allowed = os.sched_getaffinity(tid)
            except (FileNotFoundError, ProcessLookupError):
                continue  # the thread ended in between
            # After the ``)`` of comm: state is field 3; utime, stime are fields 14, 15.
            cpu = (int(fields[11]) + int(fields[12])) * _TICK_S
            known = self.last.get(tid)
            self.last[tid] = (names.get(tid, known[0] if known else None), cpu)
            self.cpus |= allowed

    def start(self) -> None:
        self.sample()
        self.base = {tid: cpu for tid, (_, cpu) in self.last.items()}

    def by_role(self) -> dict[str, float]:
        roles: dict[str, float] = {}
        for tid, (name, cpu) in self.last.items():
            role = _role(name)
            roles[role] = roles.get(role, 0.0) + cpu - self.base.get(tid, 0.0)
        return {r: round(v, 2) for r, v in sorted(roles.items(), key=lambda kv: -kv[1])}


def _engine(result) -> dict[str, float] | None:
    """Where a unit's time went, by the engine's own counters (seconds, summed over
    batches): in its operators, its operator thread waiting for input (source-bound), the
    source blocked on a full queue (operator-bound), the operators blocked on the sink."""
    if result is None:
        return None
    m = result.metrics
    return {
        "wall_s": round(result.seconds, 3),
        "operators_s": round(sum(op.seconds for op in m.operators.values()), 3),
        "idle_s": round(m.idle_s, 3),
        "source_blocked_s": round(m.source_blocked_s, 3),
        "sink_blocked_s": round(m.sink_blocked_s, 3),
        "batches": m.batches,
    }


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

    _emit(
        {
            "ready": time.time(),
            "pid": os.getpid(),
            "cpus": sorted(os.sched_getaffinity(0)),
            "polars_threads": pl.thread_pool_size(),
        }
    )
    if not args.no_wait:
        sys.stdin.readline()
    cpu_go = _cpu()
    threads = ThreadCpu()
    threads.start()
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
        ticks = 0
        while not stop.wait(0.02):
            ticks += 1
            if ticks % 5 == 0:
                threads.sample()
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
                "engine": _engine(result),
            }
        )
    threads.sample()
    _emit(
        {
            "cpu_s": round(_cpu(), 3),
            "run_cpu_s": round(_cpu() - cpu_go, 3),
            "thread_cpu_s": threads.by_role(),
            "cpus_seen": sorted(threads.cpus),
        }
    )


if __name__ == "__main__":
    main()
