"""A real WASM plugin in a pipeline: its calls, rows and errors reach Prometheus, and a
trapping batch is counted as a plugin error and as dead letters (batch_rejected); limit
hits (deadline, memory, fuel), instance restarts and pool waits are counted by kind."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa

from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, Stream, TableSource
from dataflare_platform.observability.prometheus import exposition
from dataflare_platform.plugins import Limits, Plugin
from dataflare_platform_tests.engine.helpers import T0
from dataflare_platform_tests.observability.fixtures import metrics_dir
from dataflare_platform_tests.observability.scrape import value
from dataflare_platform_tests.plugins.hostile import (
    BOMB,
    DEADLINE_MS,
    LOOP,
    MANIFEST,
    OK,
    TRAP,
    module,
)

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


def _run(plugin: Plugin, modes: list[int]) -> tuple[str, str]:
    """One pipeline whose batch i of 100 rows starts with ``modes[i]`` (hostile.py)."""
    n = 100 * len(modes)
    x = np.full(n, 7, dtype=np.int64)
    x[0::100] = modes
    table = pa.table(
        {
            "x": pa.array(x),
            "date_time": pa.array(np.arange(n, dtype=np.int64) * 10 + T0).cast(pa.timestamp("ms")),
        }
    )
    pipeline = Stream.source(TableSource.single("e", table)).plugin(plugin).sink(CollectSink())
    result = Runner(pipeline, RunnerConfig(batch_rows=100)).run()
    (op,) = list(result.metrics.operators)
    return pipeline.name, op


def test_limit_hits_and_restarts_are_exported(metrics_dir, cache_dir):
    """A real deadline hit (an endless loop), a real memory-limit hit (a memory.grow
    bomb) and a real fuel exhaustion: each counted by kind, each failed instance rebuilt."""
    limits = Limits(deadline_ms=DEADLINE_MS, memory_bytes=8 * 1024 * 1024, max_failures=100)
    plugin = Plugin(MANIFEST, module(), limits=limits, pool_size=1, cache_dir=cache_dir)
    name, op = _run(plugin, [OK, LOOP, OK, BOMB, LOOP, OK])
    text = exposition(metrics_dir)
    labels = {"pipeline": name, "operator": op}
    assert value(text, "dataflare_plugin_deadline_hits_total", **labels) == 2
    assert value(text, "dataflare_plugin_memory_hits_total", **labels) == 1
    assert value(text, "dataflare_plugin_restarts_total", **labels) == 3
    assert value(text, "dataflare_plugin_errors_total", **labels) == 3
    assert value(text, "dataflare_plugin_fuel_hits_total", **labels) is None  # never hit

    fueled = Limits(deadline_ms=60_000, fuel=100_000, max_failures=100)
    plugin = Plugin(MANIFEST, module(), limits=fueled, pool_size=1, cache_dir=cache_dir)
    name, op = _run(plugin, [LOOP, OK])
    text = exposition(metrics_dir)
    labels = {"pipeline": name, "operator": op}
    # Same pipeline and operator names as the first run: the counters add up.
    assert value(text, "dataflare_plugin_fuel_hits_total", **labels) == 1
    assert value(text, "dataflare_plugin_deadline_hits_total", **labels) == 2  # unchanged


def test_pool_waits_are_exported(metrics_dir, cache_dir):
    """The only instance is held elsewhere (another run sharing the plugin): the
    pipeline's first call waits for it, once, and the wait's time is counted."""
    plugin = Plugin(MANIFEST, module(), pool_size=1, cache_dir=cache_dir)
    held = plugin._pool.checkout()
    outcome: list = []
    runner = threading.Thread(target=lambda: outcome.append(_run(plugin, [OK, OK])))
    runner.start()
    deadline = time.monotonic() + 120  # progress decides; this only catches a hang
    while not plugin._pool._cond._waiters and time.monotonic() < deadline:
        time.sleep(0.01)
    assert plugin._pool._cond._waiters, "the run never waited for the instance"
    plugin._pool.give_back(held)
    runner.join(120)
    ((name, op),) = outcome
    text = exposition(metrics_dir)
    labels = {"pipeline": name, "operator": op}
    assert value(text, "dataflare_plugin_pool_waits_total", **labels) == 1
    assert value(text, "dataflare_plugin_pool_wait_seconds_total", **labels) > 0
