"""Cold start of a stream pipeline restarted from its checkpoint (issue 21 §1): the
path of a run resumed by a retry, a deploy or a scale-out.

A windowed YAML pipeline (bid counts per auction and 1 s window into DuckDB) reads
generated Nexmark bids from a topic of the embedded event log. A fresh process runs it
up to half of every partition's end (a bounded run: it commits a checkpoint there and
stops); a second fresh process restarts it, which restores the offsets, the watermark
and the window state from that checkpoint and reads on to the end. For each of the two
starts the child reports the time to its first committed output (from ``Runner.run()``,
and from the parent's spawn of the process, which adds interpreter start and imports)
and the p99 latency of its first 20 batches. Each phase runs in its own interpreter so
that neither pays for, nor hides, the other's imports.

Run as ``python -m dataflare_platform.bench.restart PIPELINES LOG OUT FRACTION SPAWNED``
it is the child of one phase; ``run`` is the parent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dataflare_platform.bench.common import machine

FIRST_BATCHES = 20
# Event time: 10 k events per second, so a 2 M-event topic spans 200 s of 1 s windows.
EVENTS_PER_S = 10_000.0


def bid_counts_pipeline(name: str, out_of_orderness: str, window: str) -> str:
    """The YAML of a windowed pipeline ``name``: bid counts and the top price per auction
    and tumbling ``window`` from the ``nexmark.bids`` topic into the DuckDB table
    ``name`` (the cold-start tests run the same shape)."""
    return f"""
name: {name}
watermark: {{out_of_orderness: {out_of_orderness}}}
sources:
  bids: {{kind: topic, topic: nexmark.bids, columns: [auction, price, date_time]}}
streams:
  counts:
    from: bids
    steps:
      - key_by: [auction]
      - window: {{tumbling: {window}, agg: {{n: count, top_price: {{max: price}}}}}}
output: counts
sink: {{kind: duckdb, table: {name}}}
"""


PIPELINE = bid_counts_pipeline("restart_bids", "1s", "1s")


def prepare(root: Path, events: int, seed: int = 21) -> dict[str, Path]:
    """The pipeline file and a two-partition bids topic (keyed by auction) under ``root``."""
    import pyarrow as pa

    from dataflare_platform.datagen import NexmarkConfig, NexmarkGenerator
    from dataflare_platform.events.log import EventLog

    gen = NexmarkGenerator(NexmarkConfig(events=events, events_per_second=EVENTS_PER_S, seed=seed))
    bids = pa.concat_tables([gen.chunk(i).tables(decode=True)["bids"] for i in gen.chunks()])
    paths = {"pipelines": root / "pipelines", "log": root / "log", "out": root / "out"}
    paths["pipelines"].mkdir(parents=True)
    (paths["pipelines"] / "restart_bids.yaml").write_text(PIPELINE)
    topic = EventLog(paths["log"]).create_topic(
        "nexmark.bids", bids.schema, partitions=2, key="auction"
    )
    for at in range(0, bids.num_rows, 100_000):
        topic.append(bids.slice(at, 100_000))
    return paths


def _phase(paths: dict[str, Path], fraction: float, batch_rows: int, every: int) -> dict:
    """One start, in a fresh interpreter: its child's JSON report."""
    spawned = time.time()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dataflare_platform.bench.restart",
            str(paths["pipelines"]),
            str(paths["log"]),
            str(paths["out"]),
            str(fraction),
            str(spawned),
            str(batch_rows),
            str(every),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode != 0:
        from dataflare_platform.errors import DataflareError

        raise DataflareError(f"restart benchmark phase failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(events: int = 2_000_000, batch_rows: int = 10_000, checkpoint_every: int = 2) -> dict:
    """First start to half of the topic, then a restart from that checkpoint to its end,
    each in a fresh process; both starts' cold-start figures side by side."""
    with tempfile.TemporaryDirectory(prefix="dataflare-bench-restart-") as scratch:
        paths = prepare(Path(scratch), events)
        first = _phase(paths, 0.5, batch_rows, checkpoint_every)
        restart = _phase(paths, 1.0, batch_rows, checkpoint_every)
    return {
        "benchmark": "restart",
        "pipeline": "bid counts per auction, 1 s tumbling windows, DuckDB sink",
        "events": events,
        "batch_rows": batch_rows,
        "checkpoint_every": checkpoint_every,
        "first_start": first,
        "restart": restart,
        "machine": machine(),
    }


def _child(argv: list[str]) -> dict:
    """One phase: bind the pipeline, run it bounded to ``fraction`` of every partition's
    end from wherever its checkpoint left it, and time the first commit."""
    import numpy as np

    from dataflare_platform.engine import RunnerConfig
    from dataflare_platform.engine.runner import Runner
    from dataflare_platform.events.log import EventLog
    from dataflare_platform.streams import bind
    from dataflare_platform.streams.ranges import load_specs, source_ends

    specs, log_dir, out = (Path(a) for a in argv[:3])
    fraction, spawned = float(argv[3]), float(argv[4])
    batch_rows, every = int(argv[5]), int(argv[6])
    (spec,) = load_specs(specs)
    log = EventLog(log_dir)
    until = {k: int(v * fraction) for k, v in source_ends(spec, log).items()}
    pipeline = bind.build(spec, log=log, default_dir=out)
    first: list[tuple[float, float]] = []

    def on_commit(_checkpoint, _metrics) -> None:
        if not first:
            first.append((time.perf_counter(), time.time()))

    runner = Runner(
        pipeline, RunnerConfig(batch_rows=batch_rows, checkpoint_every=every), on_commit=on_commit
    )
    started = time.perf_counter()
    try:
        result = runner.run(mode="bounded", until=until)
    finally:
        bind.close_sources(pipeline)
    m = result.metrics
    head = m.latency.head[:FIRST_BATCHES]
    return {
        "resumed_events_in": m.resumed.get("events_in", 0) if m.resumed else 0,
        "events_in": m.events_in,
        "events_out": m.events_out,
        "seconds": round(result.seconds, 4),
        "first_commit_s": round(first[0][0] - started, 4) if first else None,
        "first_commit_s_from_spawn": round(first[0][1] - spawned, 4) if first else None,
        "first_20_batches_p99_ms": round(float(np.percentile(head, 99)), 3) if head else None,
        "pandas_imported": "pandas" in sys.modules,
    }


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1:])))
