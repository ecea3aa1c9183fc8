"""Offset ranges of declarative pipelines, without Dagster."""

import pytest

from dataflare_platform.errors import ConfigError
from dataflare_platform.events.log import EventLog
from dataflare_platform.streams.ranges import load_specs, pending_range, run_range, source_ends


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


def test_a_sensor_range_binds_the_spec_once_going_down(
    tmp_path, hot_items, small_nexmark, monkeypatch
):
    """run_range opens each source and the sink once (``bind.build``) and checks the
    range against what it opened: no second binding to read the sources' ends."""
    from dataflare_platform.connectors import registry

    calls: dict[str, int] = {"open_source": 0, "open_sink": 0, "end_offsets": 0}

    def counted(name):
        real = getattr(registry, name)

        def call(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return call

    log = EventLog(tmp_path / "log")
    bids = small_nexmark["bids"]
    topic = log.create_topic("nexmark.bids", bids.schema, partitions=2)
    topic.append(bids.slice(0, 1_000), partition=0)
    topic.append(bids.slice(1_000, 1_000), partition=1)
    until = pending_range(hot_items, log, {})  # the sensor's tick
    for name in calls:
        monkeypatch.setattr(registry, name, counted(name))
    result = run_range(hot_items, log, until, tmp_path / "out")
    assert calls == {"open_source": len(hot_items.sources), "open_sink": 1, "end_offsets": 0}
    assert result.checkpoint.offsets == until
    assert result.metrics.this_run()["events_in"] == 2_000


def test_shipped_pipelines_have_unique_names_and_read_topics():
    specs = load_specs()
    assert len({s.name for s in specs}) == len(specs) >= 2
    assert all(src.topic for s in specs for src in s.sources.values())


def test_masked_persons_masks_every_email_and_card(tmp_path, small_nexmark):
    import duckdb
    import polars as pl

    from dataflare_platform.plugins.registry import PluginRegistry, RegistryConfig
    from dataflare_platform.plugins.specs import load_plugins

    (spec,) = [s for s in load_specs() if s.name == "masked_persons"]
    persons = small_nexmark["persons"]
    log = EventLog(tmp_path / "log")
    log.create_topic("nexmark.persons", persons.schema, partitions=2, key="id").append(persons)
    plugins_dir = tmp_path / "plugins"
    config = RegistryConfig.load(cache_dir=plugins_dir / ".cache", build_missing=True)
    registry = PluginRegistry(plugins_dir, config)  # builds the shipped sample from C
    ends = source_ends(spec, log)
    result = run_range(spec, log, ends, tmp_path / "out", plugins=load_plugins(spec, registry))
    assert result.metrics.dead_letters == 0
    with duckdb.connect(str(tmp_path / "out" / "masked_persons.duckdb"), read_only=True) as conn:
        got = pl.from_arrow(conn.sql("SELECT * FROM masked_persons").to_arrow_table())
    original = pl.from_arrow(persons).select("id", "email_address", "credit_card")
    both = got.join(original, on="id", suffix="_raw")
    assert both.height == got.height > 0  # windows do not apply: every person passes through
    assert both["email_address"].str.starts_with("***@").all()
    domains = both["email_address_raw"].str.split("@").list.last()
    assert (both["email_address"].str.split("@").list.last() == domains).all()
    last4 = both["credit_card_raw"].str.replace_all(r"\D", "").str.slice(-4)
    assert (both["credit_card"].str.replace_all(r"\D", "") == last4).all()
