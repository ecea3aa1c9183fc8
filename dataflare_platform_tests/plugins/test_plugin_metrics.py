"""A real WASM plugin in a pipeline: its calls, rows and errors reach Prometheus, and a
trapping batch is counted as a plugin error and as dead letters (batch_rejected)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, Stream, TableSource
from dataflare_platform.observability.prometheus import exposition
from dataflare_platform.plugins import Plugin
from dataflare_platform_tests.engine.helpers import T0
from dataflare_platform_tests.observability.fixtures import metrics_dir
from dataflare_platform_tests.observability.scrape import value
from dataflare_platform_tests.plugins.hostile import MANIFEST, OK, TRAP, module

__all__ = ["metrics_dir"]


def test_plugin_calls_rows_and_errors_are_exported(metrics_dir, cache_dir):
    x = np.full(500, 7, dtype=np.int64)
    x[0::100] = OK
    x[100] = TRAP  # the second batch of 100 traps, the others run
    x[300] = TRAP
    table = pa.table(
        {
            "x": pa.array(x),
            "date_time": pa.array(np.arange(500, dtype=np.int64) * 10 + T0).cast(
                pa.timestamp("ms")
            ),
        }
    )
    plugin = Plugin(MANIFEST, module(), pool_size=1, cache_dir=cache_dir)
    sink = CollectSink()
    pipeline = Stream.source(TableSource.single("e", table)).plugin(plugin).sink(sink)
    result = Runner(pipeline, RunnerConfig(batch_rows=100)).run()
    assert result.metrics.dead_letters == 200 and sink.result().height == 300
    text = exposition(metrics_dir)
    (op,) = [name for name in result.metrics.operators]
    labels = {"pipeline": pipeline.name, "operator": op}
    assert value(text, "dataflare_plugin_calls_total", **labels) == 5
    assert value(text, "dataflare_plugin_rows_total", **labels) == 500
    assert value(text, "dataflare_plugin_errors_total", **labels) == 2
    assert value(text, "dataflare_plugin_seconds_total", **labels) > 0
    dead = value(
        text, "dataflare_engine_dead_letters_total", pipeline=pipeline.name, reason="batch_rejected"
    )
    assert dead == 200
