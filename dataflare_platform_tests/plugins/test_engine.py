"""A WASM plugin in the engine's plugin slot (``Stream.plugin``)."""

from __future__ import annotations

import polars as pl
from polars.testing import assert_frame_equal

from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, Stream, TableSource
from dataflare_platform.plugins import load_plugin
from dataflare_platform.plugins.runtime import Plugin
from dataflare_platform_tests.engine.helpers import events
from dataflare_platform_tests.plugins.hostile import MANIFEST, OK, TRAP, module


def test_currency_plugin_runs_in_a_pipeline(built, cache_dir):
    table = events(range(0, 10_000, 10))
    plugin = load_plugin(built["currency"], columns={"price": "value"}, cache_dir=cache_dir)
    sink = CollectSink()
    stream = Stream.source(TableSource.single("e", table)).plugin(plugin).sink(sink)
    Runner(stream, RunnerConfig(batch_rows=128)).run()
    got = sink.result()
    expected = pl.from_arrow(table).with_columns((pl.col("value") * 0.908).alias("price_eur"))
    assert_frame_equal(got, expected)
    assert plugin.stats["rows"] == 1_000


def test_a_failing_batch_is_dead_lettered_and_the_pipeline_goes_on(cache_dir):
    """One batch makes the plugin trap: its rows become dead letters with the structured
    reason, the batches before and after it are processed (in = out + dead)."""
    values = [OK] * 1000
    values[256] = TRAP  # the module misbehaves by a batch's first value: the third batch
    table = events(range(0, 10_000, 10), values=values)
    plugin = Plugin(MANIFEST, module(), columns={"x": "value", "y": "out"}, cache_dir=cache_dir)
    sink = CollectSink()
    stream = Stream.source(TableSource.single("e", table)).plugin(plugin).sink(sink)
    result = Runner(stream, RunnerConfig(batch_rows=128)).run()
    dead = sink.side("dead_letter")
    assert dead.height == result.metrics.dead_letters == 128
    assert dead["reason"].str.contains("trap").all()
    assert sink.result().height == 1000 - 128
    assert result.metrics.events_in == sink.result().height + dead.height
    (op,) = [m for name, m in result.metrics.operators.items() if "plugin" in name]
    assert op.errors == 1
