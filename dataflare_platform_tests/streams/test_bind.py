"""Binding YAML pipelines to connectors: topics in, an exactly-once output topic out."""

from __future__ import annotations

import polars as pl
import pytest
import yaml

from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, TableSource
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.log import EventLog
from dataflare_platform.queries.nexmark import BUILDERS, NexmarkSources
from dataflare_platform.streams import bind
from dataflare_platform.streams.spec import PipelineSpec

HOT_ITEMS = """
name: hot-items
sources:
  bids: {topic: bids, columns: [auction, date_time]}
streams:
  hot:
    from: bids
    steps:
      - key_by: [auction]
      - window: {sliding: {size: 10s, slide: 2s}, agg: {num: count}, top: {by: num}}
output: hot
sink: {topic: hot_items}
"""


@pytest.fixture
def log(tmp_path, small_nexmark) -> EventLog:
    log = EventLog(tmp_path / "log")
    bids = small_nexmark["bids"]
    topic = log.create_topic("bids", bids.schema, partitions=2)
    for start in range(0, bids.num_rows, 400):
        topic.append(bids.slice(start, 400))
    return log


def test_offset_ranges_into_an_output_topic_equal_one_bounded_run(log, small_nexmark):
    spec = PipelineSpec.load(yaml.safe_load(HOT_ITEMS))
    ends = log.topic("bids").end_offsets()
    config = RunnerConfig(batch_rows=100, checkpoint_every=2)
    # Three sensor-style ranges; the first is too short to close any window, so the
    # output topic does not exist after it, yet its checkpoint is kept.
    for fraction in (0.01, 0.5, 1.0):
        until = {f"bids/{p}": int(end * fraction) for p, end in ends.items()}
        Runner(bind.build(spec, log=log), config).run(until=until)
        if fraction == 0.01:
            assert not log.exists("hot_items")
    got = pl.from_arrow(log.topic("hot_items").read_all())
    # The same query built in Python over the same events, bounded: its windows all
    # close at the end, so compare the ones the open-ended runs closed.
    whole = CollectSink()
    bids = TableSource.single("bids", small_nexmark["bids"].select(["auction", "date_time"]))
    Runner(BUILDERS["q5"](NexmarkSources(bids=bids), whole), config).run()
    expected = whole.result().filter(pl.col("window_start") <= got["window_start"].max())
    assert got.height > 0 and got.unique().height == got.height
    assert got.sort(got.columns).equals(expected.select(got.columns).sort(got.columns))


def test_topic_sources_are_checked_against_the_log(log):
    data = yaml.safe_load(HOT_ITEMS)
    data["sources"]["bids"]["topic"] = "nope"
    with pytest.raises(ConfigError) as err:
        bind.build(PipelineSpec.load(data), log=log)
    assert err.value.fields == ["sources.bids.topic"]
    data["sources"]["bids"] = {"topic": "bids", "path": "x"}
    with pytest.raises(ConfigError, match="exactly one of path, topic"):
        PipelineSpec.load(data)
    data["sources"]["bids"] = {"topic": "bids"}
    with pytest.raises(ConfigError) as err:
        PipelineSpec.load(data).build()  # no event log to open the topic in
    assert err.value.fields == ["sources.bids.topic"]
