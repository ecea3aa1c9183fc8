"""Topics as engine sources and as exactly-once engine sinks."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import polars as pl
import pytest

from dataflare_platform.engine import CollectSink, Runner, RunnerConfig
from dataflare_platform.events.engine_io import LogSink, LogSource, ensure_output_topic
from dataflare_platform.events.groups import ConsumerGroup
from dataflare_platform.events.log import EventLog
from dataflare_platform.queries.nexmark import BUILDERS, COLUMNS, NexmarkSources, ground_truth
from dataflare_platform_tests.processes import kill_until_done


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(df.columns)


def _publish(log: EventLog, tables, partitions: int = 2, rows: int = 333) -> None:
    for kind, table in tables.items():
        topic = log.create_topic(kind, table.schema, partitions=partitions)
        for start in range(0, table.num_rows, rows):
            topic.append(table.slice(start, rows))


def _sources(log: EventLog, query: str, bounded: bool = True) -> NexmarkSources:
    return NexmarkSources(
        **{
            k: LogSource(log.topic(k), columns=c, bounded=bounded)
            for k, c in COLUMNS[query].items()
        }
    )


def _truth(tables, query: str) -> pl.DataFrame:
    conn = duckdb.connect()
    for kind, table in tables.items():
        conn.register(kind, table)
    return pl.from_arrow(ground_truth(conn, query))


@pytest.mark.parametrize("query", ["q1", "q3", "q5", "q7", "q8"])
def test_queries_over_partitioned_topics_equal_the_ground_truth(tmp_path, small_nexmark, query):
    log = EventLog(tmp_path / "log")
    _publish(log, small_nexmark)
    sink = CollectSink()
    result = Runner(BUILDERS[query](_sources(log, query), sink), RunnerConfig(batch_rows=200)).run()
    assert result.finished
    got, expected = sink.result(), _truth(small_nexmark, query)
    assert _sorted(got.select(expected.columns)).equals(_sorted(expected))
    assert result.metrics.late_events == 0 and result.metrics.dead_letters == 0


def test_open_ended_source_runs_a_sensor_style_offset_range(tmp_path, small_nexmark):
    """Bounded by ``until`` (what a sensor tick asks for), then resumed for the rest."""
    log = EventLog(tmp_path / "log")
    _publish(log, {"bids": small_nexmark["bids"]}, partitions=1)
    ensure_output_topic(log, "q7_out", _q7_schema(small_nexmark), "date_time")
    config = RunnerConfig(batch_rows=100, checkpoint_every=2)

    def run(**kwargs):
        sources = NexmarkSources(
            bids=LogSource(log.topic("bids"), COLUMNS["q7"]["bids"], group="q7-engine")
        )
        sink = LogSink(log, "q7_out")
        return Runner(BUILDERS["q7"](sources, sink), config).run(**kwargs)

    first = run(until={"bids/0": 1000})
    assert not first.finished and first.checkpoint.offsets == {"bids/0": 1000}
    assert ConsumerGroup(log.topic("bids"), "q7-engine").committed() == {0: 1000}
    second = run(until={"bids/0": 1000})  # a repeated request processes nothing again
    assert second.metrics.events_in == first.metrics.events_in
    # The last range: the source stays open-ended, so windows close by watermark only.
    end = log.topic("bids").end_offsets()[0]
    third = run(until={"bids/0": end})
    assert third.checkpoint.offsets == {"bids/0": end}
    got = pl.from_arrow(log.topic("q7_out").read_all())
    whole = CollectSink()
    Runner(BUILDERS["q7"](_sources(log, "q7"), whole), config).run()
    # Everything the watermark closed is there, once; the windows still open at the end
    # of an open-ended stream are not (the bounded run over the same data closes them).
    expected = whole.result()
    closed = expected.filter(pl.col("date_time") < got["date_time"].max() + pl.duration(seconds=1))
    assert got.unique().height == got.height
    assert _sorted(got).equals(_sorted(closed.select(got.columns)))


def _q7_schema(tables):
    sink = CollectSink()
    sources = NexmarkSources(bids=_table_source(tables["bids"].slice(0, 500)))
    Runner(BUILDERS["q7"](sources, sink)).run()
    return sink.result().to_arrow().schema


def _table_source(table):
    from dataflare_platform.engine import TableSource

    return TableSource.single("bids", table.select(COLUMNS["q7"]["bids"]))


def test_uncommitted_output_is_invisible_and_truncated_on_restart(tmp_path, small_nexmark):
    log = EventLog(tmp_path / "log")
    _publish(log, {"bids": small_nexmark["bids"]}, partitions=1)
    out = ensure_output_topic(log, "q7_out", _q7_schema(small_nexmark), "date_time")
    sink = LogSink(log, "q7_out")
    Runner(
        BUILDERS["q7"](_sources(log, "q7", bounded=False), sink),
        RunnerConfig(batch_rows=100, checkpoint_every=3),
    ).run(until={"bids/0": 1500})
    committed = out.read_all()
    # As a crash after appending and before the commit record would leave it:
    assert committed.num_rows > 0
    out.partition(0).append(committed)
    assert out.end_offsets()[0] == 2 * committed.num_rows
    assert out.read_all().equals(committed)  # readers stop at the committed end
    reader = LogSource(out, bounded=True)
    assert reader.end_offset("0") == committed.num_rows
    writer = LogSink(log, "q7_out")
    writer.open("nexmark-q7")
    assert out.end_offsets()[0] == committed.num_rows  # the tail is gone
    with pytest.raises(RuntimeError, match="being written by another run"):
        LogSink(log, "q7_out").open("nexmark-q7")
    writer.close()
    with pytest.raises(RuntimeError, match="output of pipeline 'nexmark-q7', not 'other'"):
        LogSink(log, "q7_out").open("other")


_RUN = """
import json
import sys
from pathlib import Path
from dataflare_platform.engine import Runner, RunnerConfig
from dataflare_platform.events.engine_io import LogSink, LogSource
from dataflare_platform.events.log import EventLog
from dataflare_platform.queries.nexmark import BUILDERS, COLUMNS, NexmarkSources

log = EventLog(Path(sys.argv[1]))
sources = NexmarkSources(bids=LogSource(log.topic("bids"), COLUMNS["q5"]["bids"], bounded=True))
sink = LogSink(log, sys.argv[2])
result = Runner(
    BUILDERS["q5"](sources, sink), RunnerConfig(batch_rows=500, checkpoint_every=3, rate=40_000)
).run()
print(json.dumps({"finished": result.finished}))
"""


@pytest.mark.e2e
def test_sigkill_then_restart_writes_the_output_topic_exactly_once(tmp_path, medium_nexmark):
    log = EventLog(tmp_path / "log")
    _publish(log, {"bids": medium_nexmark["bids"]}, partitions=1, rows=5000)
    schema = _q5_schema(log)
    for name in ("clean", "crashed"):
        ensure_output_topic(log, name, schema, "window_start")
    command = [sys.executable, "-c", _RUN, str(log.root)]
    subprocess.run([*command, "clean"], check=True, capture_output=True, timeout=300)
    summary, kills = kill_until_done([*command, "crashed"], seed=5, delay_s=(0.4, 1.0))
    assert summary["finished"]
    assert kills >= 2, "the run finished before it could be killed twice"
    fresh = EventLog(log.root)
    expected = pl.from_arrow(fresh.topic("clean").read_all())
    got = pl.from_arrow(fresh.topic("crashed").read_all())
    assert expected.height > 0
    assert _sorted(got).equals(_sorted(expected))
    assert got.unique().height == got.height


def _q5_schema(log: EventLog):
    sink = CollectSink()
    sources = NexmarkSources(bids=LogSource(log.topic("bids"), COLUMNS["q5"]["bids"], bounded=True))
    Runner(BUILDERS["q5"](sources, sink)).run()
    return sink.result().to_arrow().schema
