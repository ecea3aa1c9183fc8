"""Switching a pipeline from one run to partition-parallel workers: the single run's
checkpoint is split into per-partition unit checkpoints, atomically and once, and the
workers carry on where the single run stopped. Real parts: the embedded log (a topic of
4 partitions keyed by auction), real PostgreSQL and DuckDB sinks, in-process runs; the
crash test SIGKILLs a real process in the middle of the split's transaction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import polars as pl
import psycopg
import pyarrow as pa
import pytest

from dataflare_platform.engine import RunnerConfig
from dataflare_platform.engine.checkpoint import Checkpoint, split_into
from dataflare_platform.errors import ConflictError
from dataflare_platform.events.log import EventLog
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform.streams import bind
from dataflare_platform.streams.continuous import ContinuousRun
from dataflare_platform.streams.parallel import ParallelismError
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform.streams.split import split_checkpoint, split_single_run
from dataflare_platform.streams.workers import PartitionWorker, check_splittable, unit_key
from dataflare_platform_tests.streams.test_workers import (
    PARTITIONS,
    SCHEMA,
    closers,
    counts_spec,
    events,
    table,
    truth,
)
from dataflare_platform_tests.waits import wait_until

CONFIG = RunnerConfig(batch_rows=500, checkpoint_interval_s=0.2)
SOURCE = {"kind": "topic", "topic": "bids", "columns": ["auction", "price", "date_time"]}


@pytest.fixture
def log(tmp_path):
    log = EventLog(tmp_path / "log")
    log.create_topic("bids", SCHEMA, partitions=PARTITIONS, key="auction")
    return log


def checkpoints(dsn: str, schema: str) -> dict[str, Checkpoint]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f"SELECT pipeline, state FROM {quote_identifier(schema)}.dataflare_checkpoints"
        ).fetchall()
    return {p: Checkpoint.decode(bytes(s)) for p, s in rows}


def reached(offsets: dict[str, int], ends: dict[int, int], partitions) -> bool:
    return all(offsets.get(f"bids/{p}") == ends[p] for p in partitions)


def run_single(
    spec: PipelineSpec,
    log: EventLog,
    streams: Path,
    ends: dict[int, int] | None = None,
    source: str = "bids",
    config: RunnerConfig = CONFIG,
) -> None:
    """One continuous run until it has committed every partition to its end (``ends``,
    or the embedded topic's), then a graceful stop (last batch, last checkpoint):
    windows still open stay in its state."""
    ends = ends if ends is not None else log.topic("bids").committed_ends()
    run = ContinuousRun(spec, log, streams, config=config).start()
    deadline = time.monotonic() + 120
    try:
        for report in run.reports_or_idle():
            if report is not None and all(
                report.offsets.get(f"{source}/{p}") == ends[p] for p in ends
            ):
                break
            if time.monotonic() > deadline:
                pytest.fail("the single run did not commit every partition to its end")
    finally:
        assert run.stop(120)


def run_workers(
    spec: PipelineSpec,
    log: EventLog,
    streams: Path,
    groups: list[list[int]],
    ends: dict[int, int] | None = None,
) -> list[BaseException]:
    """One in-process worker per group of partitions, started together (so their
    splits race), until every partition has committed to its end."""
    ends = ends if ends is not None else log.topic("bids").committed_ends()
    stop = threading.Event()
    seen: dict[int, dict[str, int]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def on_report(unit) -> None:
        with lock:
            seen[unit.partition] = unit.report.offsets
            if all(reached(seen.get(p, {}), ends, [p]) for p in range(PARTITIONS)):
                stop.set()

    def work(group: list[int]) -> None:
        try:
            PartitionWorker(spec, log, streams, group, config=CONFIG).run(stop, on_report)
        except BaseException as err:
            errors.append(err)
            stop.set()

    threads = [threading.Thread(target=work, args=(g,)) for g in groups]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert not any(t.is_alive() for t in threads)
    return errors


def test_a_keyed_windowed_pipeline_switches_from_one_run_to_two_workers_exactly_once(
    tmp_path, log, dsn, pg_schema
):
    path = tmp_path / "bid_counts.yaml"
    path.write_text(counts_spec(SOURCE, dsn, pg_schema))
    spec = PipelineSpec.from_yaml(path)
    streams = tmp_path / "streams"
    topic = log.topic("bids")
    first = events(0, 6_000, 3)  # 0 .. 18 s of event time
    topic.append(first)
    run_single(spec, log, streams)
    single = checkpoints(dsn, pg_schema)["bid_counts"]
    panes = sum(t.num_rows for s in single.states.values() for t in s.values())
    assert panes > 0, "the single run stopped with open windows in its state"
    assert table(dsn, pg_schema).height > 0, "and with windows already written"

    rest = events(18_000, 6_000, 4)
    topic.append(rest)
    topic.append(closers(topic, 3_600_000))
    # Two workers start together: one splits, the other finds it split.
    assert run_workers(spec, log, streams, [[0, 2], [1, 3]]) == []

    assert table(dsn, pg_schema).to_dicts() == truth([first, rest], 3_600_000).to_dicts()
    after = checkpoints(dsn, pg_schema)
    assert split_into(after["bid_counts"]) == PARTITIONS
    assert after["bid_counts"].offsets == single.offsets  # retired where the split was
    assert sorted(after) == sorted(["bid_counts", *(unit_key("bid_counts", p) for p in range(4))])
    # Back to one run is refused: it would read the partitions the units carried on.
    with pytest.raises(ConflictError, match="switched to partition-parallel workers"):
        run_single(spec, log, streams)


def test_workers_started_from_nothing_retire_the_single_key_so_one_run_cannot_start_over(
    tmp_path, log, dsn, pg_schema
):
    path = tmp_path / "bid_counts.yaml"
    path.write_text(counts_spec(SOURCE, dsn, pg_schema))
    spec = PipelineSpec.from_yaml(path)
    streams = tmp_path / "streams"
    log.topic("bids").append(events(0, 2_000, 8))
    assert run_workers(spec, log, streams, [[0, 1, 2, 3]]) == []
    marker = checkpoints(dsn, pg_schema)["bid_counts"]
    assert split_into(marker) == PARTITIONS and marker.offsets == {} and marker.states == {}
    with pytest.raises(ConflictError, match="carried on in 4 per-partition checkpoints"):
        run_single(spec, log, streams)


def test_split_state_goes_to_the_partition_of_its_key_and_counters_to_the_first_unit(
    tmp_path, log, dsn, pg_schema
):
    path = tmp_path / "bid_counts.yaml"
    path.write_text(counts_spec(SOURCE, dsn, pg_schema))
    spec = PipelineSpec.from_yaml(path)
    log.topic("bids").append(events(0, 3_000, 9))
    run_single(spec, log, tmp_path / "streams")
    single = checkpoints(dsn, pg_schema)["bid_counts"]
    whole = bind.build(spec, log=log, default_dir=tmp_path)
    units = split_checkpoint(single, whole, range(PARTITIONS))
    (step,) = [k for k, v in single.states.items() if "panes" in v]
    all_panes = pl.from_arrow(single.states[step]["panes"])
    shares = [pl.from_arrow(units[p].states[step]["panes"]) for p in range(PARTITIONS)]
    assert sum(s.height for s in shares) == all_panes.height
    for p, share in enumerate(shares):
        assert share.height > 0
        assert set((share["auction"].hash(seed=0) % PARTITIONS).to_list()) == {p}
        assert units[p].offsets == {f"bids/{p}": single.offsets[f"bids/{p}"]}
        assert set(units[p].watermark["max_seen"]) == {f"bids/{p}"}
        assert units[p].states[step]["meta"] == single.states[step]["meta"]
    assert units[0].counters == single.counters and units[1].counters == {}


def test_a_stateless_pipeline_into_duckdb_switches_to_one_worker_of_all_partitions(tmp_path, log):
    streams = tmp_path / "streams"
    path = tmp_path / "cheap.yaml"
    path.write_text(
        "name: cheap\n"
        "sources:\n"
        "  bids: {kind: topic, topic: bids, columns: [auction, price, date_time]}\n"
        "streams:\n"
        "  cheap:\n"
        "    from: bids\n"
        "    steps:\n"
        "      - filter: price < 300\n"
        "output: cheap\n"
        f"sink: {{kind: duckdb, path: {tmp_path / 'out.duckdb'}, table: cheap}}\n"
    )
    spec = PipelineSpec.from_yaml(path)
    topic = log.topic("bids")
    first, rest = events(0, 4_000, 1), events(12_000, 4_000, 2)
    topic.append(first)
    run_single(spec, log, streams)
    topic.append(rest)
    assert run_workers(spec, log, streams, [list(range(PARTITIONS))]) == []
    with duckdb.connect(str(tmp_path / "out.duckdb")) as conn:
        got = pl.from_arrow(conn.sql("SELECT * FROM cheap").to_arrow_table())
        keys = [r[0] for r in conn.sql("SELECT pipeline FROM dataflare_checkpoints").fetchall()]
    expected = pl.concat([pl.from_arrow(first), pl.from_arrow(rest)]).filter(pl.col("price") < 300)
    order = ["auction", "date_time", "price"]
    assert got.select(expected.columns).sort(order).equals(expected.sort(order))
    assert sorted(keys) == sorted(["cheap", *(unit_key("cheap", p) for p in range(PARTITIONS))])


def test_state_that_cannot_be_split_is_refused_and_the_single_checkpoint_stays(
    tmp_path, log, dsn, pg_schema
):
    path = tmp_path / "bid_counts.yaml"
    # A window over all auctions (no key_by): one state over every partition's rows.
    path.write_text(counts_spec(SOURCE, dsn, pg_schema).replace("      - key_by: [auction]\n", ""))
    spec = PipelineSpec.from_yaml(path)
    log.topic("bids").append(events(0, 2_000, 5))
    run_single(spec, log, tmp_path / "streams")
    before = checkpoints(dsn, pg_schema)
    with pytest.raises(ParallelismError, match="keeps one state over all rows"):
        check_splittable(spec, log, tmp_path / "streams")
    assert checkpoints(dsn, pg_schema).keys() == before.keys() == {"bid_counts"}

    # A state table the split cannot attribute (no partition column) is refused by name.
    path.write_text(counts_spec(SOURCE, dsn, pg_schema))
    whole = bind.build(PipelineSpec.from_yaml(path), log=log, default_dir=tmp_path)
    (step,) = [n.id for n in whole.operators() if n.operator.stateful]
    odd = Checkpoint(
        offsets={"bids/0": 5},
        states={step: {"panes": pa.table({"bidder": [1, 2]})}},
    )
    with pytest.raises(ParallelismError, match=r"keeps state 'panes' with columns \['bidder'\]"):
        split_checkpoint(odd, whole, range(PARTITIONS))


def test_a_sink_that_cannot_split_in_one_transaction_is_refused(tmp_path, log, dsn, pg_schema):
    from dataflare_platform.engine.io import TransactionalSink

    class OneKeySink(TransactionalSink):
        def open(self, pipeline: str) -> Checkpoint | None:
            return Checkpoint(offsets={"bids/0": 3})

    path = tmp_path / "bid_counts.yaml"
    path.write_text(counts_spec(SOURCE, dsn, pg_schema))
    whole = bind.build(PipelineSpec.from_yaml(path), log=log, default_dir=tmp_path)
    with pytest.raises(ParallelismError, match=r"its sink \(OneKeySink\) cannot split"):
        split_single_run(whole, OneKeySink(), range(PARTITIONS), unit_key)


SPLITTER = """
import sys
from pathlib import Path
from dataflare_platform.events.log import EventLog
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform.streams.workers import check_splittable
spec, log, streams = sys.argv[1:4]
print("splitting", flush=True)
check_splittable(PipelineSpec.from_yaml(Path(spec)), EventLog(Path(log)), Path(streams))
print("split", flush=True)
"""


def test_a_split_killed_inside_its_transaction_leaves_the_old_layout_and_runs_again(
    tmp_path, log, dsn, pg_schema
):
    path = tmp_path / "bid_counts.yaml"
    path.write_text(counts_spec(SOURCE, dsn, pg_schema))
    spec = PipelineSpec.from_yaml(path)
    streams = tmp_path / "streams"
    log.topic("bids").append(events(0, 3_000, 6))
    run_single(spec, log, streams)
    before = checkpoints(dsn, pg_schema)
    checkpoints_table = f"{quote_identifier(pg_schema)}.dataflare_checkpoints"
    with psycopg.connect(dsn) as holder:
        # Hold the single checkpoint's row: the split writes its unit rows, then waits
        # to retire that row (an upsert), inside its transaction, where it is killed.
        holder.execute(
            f"SELECT 1 FROM {checkpoints_table} WHERE pipeline = 'bid_counts' FOR UPDATE"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", SPLITTER, str(path), str(log.root), str(streams)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:

            def waiting_to_retire() -> bool:
                with psycopg.connect(dsn) as probe:
                    row = probe.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE 'INSERT INTO %%ON CONFLICT (pipeline, target)%%'"
                    ).fetchone()
                return bool(row and row[0])

            wait_until("the split waits to retire the single checkpoint", waiting_to_retire)
            proc.send_signal(signal.SIGKILL)
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
        holder.rollback()
    # The server ends the dead session's transaction: none of the unit rows stay.
    wait_until(
        "the killed split's session is gone",
        lambda: checkpoints(dsn, pg_schema).keys() == {"bid_counts"},
    )
    assert checkpoints(dsn, pg_schema)["bid_counts"].encode() == before["bid_counts"].encode()
    # The next worker start splits it whole.
    assert check_splittable(spec, log, streams) == list(range(PARTITIONS))
    after = checkpoints(dsn, pg_schema)
    assert split_into(after["bid_counts"]) == PARTITIONS and len(after) == PARTITIONS + 1
    # And a second start finds it split and leaves it alone.
    check_splittable(spec, log, streams)
    assert {k: c.encode() for k, c in checkpoints(dsn, pg_schema).items()} == {
        k: c.encode() for k, c in after.items()
    }
