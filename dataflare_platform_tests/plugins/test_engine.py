"""A WASM plugin in the engine's plugin slot (``Stream.plugin``)."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, Stream, TableSource
from dataflare_platform.plugins import PluginError, load_plugin
from dataflare_platform.plugins.runtime import Plugin
from dataflare_platform_tests.engine.helpers import events
from dataflare_platform_tests.plugins.hostile import MANIFEST, TRAP, module


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


def test_failing_plugin_surfaces_a_structured_error(cache_dir):
    """Until PluginOperator routes PluginError to dead letters, a failed batch stops the
    run with the structured error (the host process is unharmed)."""
    table = events(range(0, 100, 10), values=[TRAP] * 10)
    plugin = Plugin(MANIFEST, module(), columns={"x": "value", "y": "out"}, cache_dir=cache_dir)
    stream = Stream.source(TableSource.single("e", table)).plugin(plugin).sink(CollectSink())
    with pytest.raises(PluginError, match="trap"):
        Runner(stream, RunnerConfig(batch_rows=128)).run()
