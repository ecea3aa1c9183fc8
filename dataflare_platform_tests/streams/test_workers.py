"""Partition-parallel workers with real parts: the embedded log (a 4-partition topic
keyed by auction), real worker processes, a real PostgreSQL sink. Each partition has its
own state and checkpoint; a worker killed with SIGKILL loses its leases with its life,
its successor resumes every partition from its last commit, and the table equals the
ground truth exactly once (windows per auction counted from the input with Polars)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import psycopg
import pyarrow as pa
import pytest

from dataflare_platform.engine import RunnerConfig
from dataflare_platform.events.log import EventLog
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform.streams.parallel import ParallelismError
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform.streams.workers import PartitionLease, PartitionWorker, unit_key
from dataflare_platform_tests.waits import wait_until

SCHEMA = pa.schema([("auction", pa.int64()), ("price", pa.int64()), ("date_time", pa.int64())])
PARTITIONS = 4
WINDOW_MS = 1_000


def spec_text(dsn: str, schema: str, key: str = "auction", top: bool = False) -> str:
    ranked = ", top: {by: n}" if top else ""
    window = f"{{tumbling: 1s, agg: {{n: count, total: {{sum: price}}}}{ranked}}}"
    return f"""
name: bid_counts
watermark: {{out_of_orderness: 0s}}
sources:
  bids: {{kind: topic, topic: bids, columns: [auction, price, date_time]}}
streams:
  counts:
    from: bids
    steps:
      - key_by: [{key}]
      - window: {window}
output: counts
sink: {{kind: postgres, dsn: "{dsn}", table: bid_counts, schema_name: {schema}}}
"""


def counts_spec(
    source: dict,
    dsn: str,
    schema: str,
    name: str = "bid_counts",
    steps: tuple[dict, ...] = (),
    more: dict | None = None,
) -> str:
    """bid counts per auction and 1 s window into PostgreSQL, over ``source`` (the
    ``sources.bids`` settings of any kind), as a pipeline file's text; ``steps`` run
    before the count, ``more`` adds top-level fields (``autoscaling``)."""
    before = "".join(f"\n      - {json.dumps(s)}" for s in steps)
    extra = "".join(f"{k}: {json.dumps(v)}\n" for k, v in (more or {}).items())
    return f"""
name: {name}
watermark: {{out_of_orderness: 0s}}
sources:
  bids: {json.dumps(source)}
streams:
  counts:
    from: bids
    steps:{before}
      - key_by: [auction]
      - window: {{tumbling: 1s, agg: {{n: count, total: {{sum: price}}}}}}
output: counts
sink: {{kind: postgres, dsn: "{dsn}", table: bid_counts, schema_name: {schema}}}
{extra}"""


@pytest.fixture
def schema(pg_schema):
    return pg_schema


@pytest.fixture
def setup(tmp_path, dsn, schema):
    log = EventLog(tmp_path / "log")
    topic = log.create_topic("bids", SCHEMA, partitions=PARTITIONS, key="auction")
    spec_path = tmp_path / "bid_counts.yaml"
    spec_path.write_text(spec_text(dsn, schema))
    return log, topic, spec_path, tmp_path / "streams"


def events(start_ms: int, n: int, seed: int) -> pa.Table:
    rng = pl.int_range(0, n, eager=True)
    frame = pl.DataFrame(
        {
            "auction": ((rng * 7919 + seed) % 50).cast(pl.Int64),
            "price": ((rng * 31 + seed) % 1000).cast(pl.Int64),
            "date_time": (start_ms + rng * 3).cast(pl.Int64),
        }
    )
    return frame.to_arrow().cast(SCHEMA)


def closers(topic, at_ms: int) -> pa.Table:
    """One event far ahead in every partition: closes every earlier window there."""
    auctions, seen = [], set()
    for a in range(1_000, 10_000):
        p = int(pl.Series([a], dtype=pl.Int64).hash(seed=0)[0] % PARTITIONS)
        if p not in seen:
            seen.add(p)
            auctions.append(a)
        if len(seen) == PARTITIONS:
            break
    n = len(auctions)
    return pa.table(
        {"auction": auctions, "price": [0] * n, "date_time": [at_ms] * n}, schema=SCHEMA
    )


def truth(tables: list[pa.Table], closed_before_ms: int) -> pl.DataFrame:
    frame = pl.concat([pl.from_arrow(t) for t in tables])
    frame = frame.filter(pl.col("date_time") < closed_before_ms)
    return (
        frame.with_columns((pl.col("date_time") // WINDOW_MS * WINDOW_MS).alias("start"))
        .group_by("auction", "start")
        .agg(pl.len().cast(pl.Int64).alias("n"), pl.col("price").sum().alias("total"))
        .sort("auction", "start")
    )


def table(dsn: str, schema: str) -> pl.DataFrame:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f"SELECT auction, window_start, n, total FROM {quote_identifier(schema)}.bid_counts"
        ).fetchall()
    frame = pl.DataFrame(rows, schema=["auction", "start", "n", "total"], orient="row")
    start = pl.col("start")
    if frame.schema["start"].is_temporal():  # window bounds are event times: timestamps
        start = start.dt.epoch("ms")
    return frame.with_columns(start.cast(pl.Int64)).sort("auction", "start")


def committed(dsn: str, schema: str) -> dict[str, dict[str, int]]:
    """Each unit's committed offsets, from the sink's checkpoint rows."""
    from dataflare_platform.engine.checkpoint import Checkpoint

    with psycopg.connect(dsn) as conn:
        exists = conn.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s"
            " AND table_name = 'dataflare_checkpoints'",
            [schema],
        ).fetchone()
        if not exists:
            return {}
        rows = conn.execute(
            f"SELECT pipeline, state FROM {quote_identifier(schema)}.dataflare_checkpoints"
        ).fetchall()
    return {p: Checkpoint.decode(bytes(s)).offsets for p, s in rows}


def start_worker(spec_path: Path, log: EventLog, streams: Path, partitions: str):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dataflare_platform_tests.streams.worker_proc",
            "--spec",
            str(spec_path),
            "--log",
            str(log.root),
            "--dir",
            str(streams),
            "--partitions",
            partitions,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@dataclass
class Feed:
    """How a takeover test writes to its source, whatever the system: append rows
    (partitioned by auction), put one far-ahead event in every partition, read the ends."""

    send: Callable[[pa.Table], object]
    close_windows: Callable[[int], object]
    ends: Callable[[], dict[int, int]]


def check_takeover(spec_path: Path, log: EventLog, streams: Path, feed: Feed, dsn, schema) -> None:
    """Two worker processes own partitions 0,2 and 1,3; the first is SIGKILLed after its
    first commits, rows keep arriving, a successor takes 0,2 over from their checkpoints;
    once every partition has committed to the end, the table equals the ground truth:
    every window exactly once."""
    appended = [events(0, 6_000, 1)]
    feed.send(appended[0])
    a = start_worker(spec_path, log, streams, "0,2")
    b = start_worker(spec_path, log, streams, "1,3")
    successor = None
    try:
        keys = {unit_key("bid_counts", p) for p in range(PARTITIONS)}
        # Both workers commit their own partitions under their own keys.
        wait_until("a checkpoint of every partition", lambda: keys <= set(committed(dsn, schema)))
        appended.append(events(18_000, 6_000, 2))
        feed.send(appended[-1])  # read while the workers run
        a.kill()  # SIGKILL: no final checkpoint, the leases die with the process
        a.wait(30)
        appended.append(events(36_000, 6_000, 3))
        feed.send(appended[-1])
        successor = start_worker(spec_path, log, streams, "0,2")
        feed.close_windows(3_600_000)
        ends = feed.ends()

        def caught_up():
            offsets = committed(dsn, schema)
            return all(
                offsets.get(unit_key("bid_counts", p), {}).get(f"bids/{p}") == ends[p]
                for p in range(PARTITIONS)
            )

        wait_until("every partition committed to the end", caught_up)
        for proc in (b, successor):
            proc.send_signal(signal.SIGTERM)
        outs = [proc.communicate(timeout=60) for proc in (b, successor)]
        for proc, (out, err) in zip((b, successor), outs, strict=True):
            assert proc.returncode == 0, err[-2000:]
            finals = [json.loads(line) for line in out.splitlines() if '"final"' in line]
            assert len(finals) == 2  # each worker's two partitions ended with a checkpoint
    finally:
        for proc in (a, b, successor):
            if proc is not None and proc.poll() is None:
                proc.kill()
    got = table(dsn, schema)
    want = truth(appended, 3_600_000)
    assert got.height == want.height > 0
    assert got.to_dicts() == want.to_dicts()


def test_killed_worker_is_taken_over_and_the_table_is_exactly_once(setup, dsn, schema):
    log, topic, spec_path, streams = setup
    feed = Feed(
        topic.append,
        lambda at_ms: topic.append(closers(topic, at_ms)),
        topic.committed_ends,
    )
    check_takeover(spec_path, log, streams, feed, dsn, schema)


def test_one_worker_owns_every_partition_in_one_process_and_stops_gracefully(setup, dsn, schema):
    log, topic, spec_path, streams = setup
    data = events(0, 4_000, 5)
    topic.append(data)
    topic.append(closers(topic, 3_600_000))
    spec = PipelineSpec.from_yaml(spec_path)
    worker = PartitionWorker(
        spec,
        log,
        streams,
        range(PARTITIONS),
        config=RunnerConfig(batch_rows=500, checkpoint_interval_s=0.2),
    )
    stop = threading.Event()
    seen: dict[int, dict[str, int]] = {}
    ends = topic.committed_ends()

    def on_report(unit) -> None:
        seen[unit.partition] = unit.report.offsets
        # Each unit reads its own partition only, and reports its own lag only.
        assert set(unit.report.offsets) == {f"bids/{unit.partition}"}
        if all(seen.get(p, {}).get(f"bids/{p}") == ends[p] for p in range(PARTITIONS)):
            stop.set()

    results = worker.run(stop, on_report)
    assert set(results) == set(range(PARTITIONS))
    assert all(not lease.held for lease in worker.leases.values())
    assert table(dsn, schema).to_dicts() == truth([data], 3_600_000).to_dicts()


def test_a_partition_held_by_a_live_worker_is_not_taken(tmp_path):
    held = PartitionLease(tmp_path, "p", 3)
    assert held.try_acquire() and held.holder() == str(os.getpid())
    # Another process cannot take it while this one lives.
    probe = (
        "import sys; from pathlib import Path;"
        "from dataflare_platform.streams.workers import PartitionLease;"
        f"sys.exit(0 if PartitionLease(Path({str(tmp_path)!r}), 'p', 3).try_acquire() else 7)"
    )
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 7
    held.release()
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


def test_pipelines_whose_state_cannot_be_split_are_refused_before_any_unit_runs(
    tmp_path, dsn, schema
):
    log = EventLog(tmp_path / "log")
    log.create_topic("bids", SCHEMA, partitions=PARTITIONS, key="auction")
    refused = tmp_path / "refused.yaml"
    refused.write_text(spec_text(dsn, schema, key="price"))
    with pytest.raises(ParallelismError, match=r"keeps state by \['price'\]"):
        PartitionWorker(PipelineSpec.from_yaml(refused), log, tmp_path, [0])
    refused.write_text(spec_text(dsn, schema, top=True))
    with pytest.raises(ParallelismError, match="ranks the rows of all keys"):
        PartitionWorker(PipelineSpec.from_yaml(refused), log, tmp_path, [0])
    fine = tmp_path / "fine.yaml"
    fine.write_text(spec_text(dsn, schema))
    with pytest.raises(ValueError, match=r"no partition\(s\) \[9\]"):
        PartitionWorker(PipelineSpec.from_yaml(fine), log, tmp_path, [9])


def test_partitions_checked_by_the_caller_are_not_checked_again(tmp_path, dsn, schema, monkeypatch):
    from dataflare_platform.streams import workers

    log = EventLog(tmp_path / "log")
    log.create_topic("bids", SCHEMA, partitions=PARTITIONS, key="auction")
    fine = tmp_path / "fine.yaml"
    fine.write_text(spec_text(dsn, schema))
    spec = PipelineSpec.from_yaml(fine)
    known = workers.check_splittable(spec, log, tmp_path)
    assert known == [0, 1, 2, 3]
    calls: list[str] = []
    monkeypatch.setattr(workers, "check_splittable", lambda spec, *a, **k: calls.append(spec.name))
    worker = PartitionWorker(spec, log, tmp_path, [3, 1], checked_partitions=known)
    assert worker.partitions == [1, 3] and calls == []
    with pytest.raises(ValueError, match=r"no partition\(s\) \[9\]; it has \[0, 1, 2, 3\]"):
        PartitionWorker(spec, log, tmp_path, [9], checked_partitions=known)
    assert calls == []


def test_a_pipeline_with_progress_as_one_run_is_split_rather_than_read_twice(setup, dsn, schema):
    """The single run's checkpoint becomes one per partition before any unit starts
    (``streams.split``; the switch itself is tested in test_split.py)."""
    from dataflare_platform.engine import Runner
    from dataflare_platform.streams import bind

    log, topic, spec_path, streams = setup
    topic.append(events(0, 1_000, 7))
    spec = PipelineSpec.from_yaml(spec_path)
    Runner(bind.build(spec, log=log, default_dir=streams, bounded=True), RunnerConfig()).run()
    single = committed(dsn, schema)["bid_counts"]
    PartitionWorker(spec, log, streams, [0])
    units = committed(dsn, schema)
    for p in range(PARTITIONS):
        assert units[unit_key("bid_counts", p)] == {f"bids/{p}": single[f"bids/{p}"]}


def test_a_sink_per_partition_replaces_the_declared_one(tmp_path):
    from dataflare_platform.engine.sinks import CollectSink

    log = EventLog(tmp_path / "log")
    topic = log.create_topic("bids", SCHEMA, partitions=PARTITIONS, key="auction")
    data = events(0, 3_000, 11)
    topic.append(data)
    topic.append(closers(topic, 3_600_000))
    path = tmp_path / "bid_counts.yaml"
    path.write_text(spec_text("unused", "unused").split("sink:")[0] + "sink: {kind: discard}\n")
    sinks: dict[int, CollectSink] = {}

    def sink_for(partition: int) -> CollectSink:
        sinks[partition] = CollectSink()
        return sinks[partition]

    worker = PartitionWorker(
        PipelineSpec.from_yaml(path),
        log,
        tmp_path / "streams",
        range(PARTITIONS),
        config=RunnerConfig(batch_rows=500, checkpoint_interval_s=0.1),
        sinks=sink_for,
    )
    stop = threading.Event()
    ends = topic.committed_ends()

    def on_report(unit) -> None:
        if all(
            p in sinks
            and sinks[p].checkpoint is not None
            and sinks[p].checkpoint.offsets.get(f"bids/{p}") == ends[p]
            for p in range(PARTITIONS)
        ):
            stop.set()

    worker.run(stop, on_report)
    assert set(sinks) == set(range(PARTITIONS))
    for p, sink in sinks.items():
        # Each unit wrote its own sink, with its own partition's offsets only.
        assert set(sink.checkpoint.offsets) == {f"bids/{p}"}
    # Every bid before the closers is counted once, across the four sinks.
    counted = sum(int(s.result()["n"].sum()) for s in sinks.values() if s.outputs)
    assert counted == data.num_rows
