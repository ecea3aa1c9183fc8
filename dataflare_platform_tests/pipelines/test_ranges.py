"""Offset ranges of declarative pipelines, without Dagster."""

import pytest

from dataflare_platform.errors import ConfigError
from dataflare_platform.events.log import EventLog
from dataflare_platform.pipelines import load_specs, pending_range, run_range


@pytest.fixture
def hot_items():
    (spec,) = [s for s in load_specs() if s.name == "hot_items"]
    return spec


def test_pending_range_moves_only_with_new_events(tmp_path, hot_items, small_nexmark):
    log = EventLog(tmp_path / "log")
    assert pending_range(hot_items, log, {}) is None  # no topic yet
    bids = small_nexmark["bids"]
    topic = log.create_topic("nexmark.bids", bids.schema, partitions=2)
    assert pending_range(hot_items, log, {}) is None  # empty topic
    topic.append(bids.slice(0, 100), partition=0)
    assert pending_range(hot_items, log, {}) == {"bids/0": 100, "bids/1": 0}
    assert pending_range(hot_items, log, {"bids/0": 100, "bids/1": 0}) is None
    topic.append(bids.slice(100, 50), partition=1)
    assert pending_range(hot_items, log, {"bids/0": 100}) == {"bids/0": 100, "bids/1": 50}


def test_run_range_refuses_partitions_it_does_not_read(tmp_path, hot_items, small_nexmark):
    log = EventLog(tmp_path / "log")
    log.create_topic("nexmark.bids", small_nexmark["bids"].schema)
    with pytest.raises(ConfigError) as err:
        run_range(hot_items, log, {"bids/7": 10}, tmp_path / "out")
    assert err.value.fields == ["until"]


def test_shipped_pipelines_have_unique_names_and_read_topics():
    specs = load_specs()
    assert len({s.name for s in specs}) == len(specs) >= 2
    assert all(src.topic for s in specs for src in s.sources.values())
