"""A real WASM plugin (wasmtime) in a traced run: one span per call under its batch, and a
trapping call marked ERROR by type while the run goes on (the batch is dead-lettered)."""

from __future__ import annotations

from opentelemetry.trace import StatusCode

from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, Stream, TableSource
from dataflare_platform.observability import ObservabilitySettings
from dataflare_platform.observability.tracing import configure_tracing
from dataflare_platform.plugins.runtime import Plugin
from dataflare_platform_tests.engine.helpers import events
from dataflare_platform_tests.plugins.hostile import MANIFEST, OK, TRAP, module


def test_each_plugin_call_is_a_span_of_its_batch_and_a_trap_is_an_error(cache_dir):
    tracing = configure_tracing(ObservabilitySettings(traces_exporter="memory"))
    try:
        values = [OK] * 1000
        values[256] = TRAP  # the third batch traps
        table = events(range(0, 10_000, 10), values=values)
        plugin = Plugin(MANIFEST, module(), columns={"x": "value", "y": "out"}, cache_dir=cache_dir)
        sink = CollectSink()
        stream = Stream.source(TableSource.single("e", table)).plugin(plugin).sink(sink)
        result = Runner(stream, RunnerConfig(batch_rows=128)).run()
        spans = tracing.memory.get_finished_spans()
    finally:
        configure_tracing(None)
    by_id = {s.context.span_id: s for s in spans}
    calls = [s for s in spans if s.name.startswith("dataflare.plugin ")]
    assert len(calls) == plugin.stats["calls"] == result.metrics.batches == 8
    assert all(by_id[c.parent.span_id].name == "process e" for c in calls)
    failed = [c for c in calls if c.status.status_code is StatusCode.ERROR]
    assert len(failed) == 1 and failed[0].attributes["dataflare.plugin.rows_in"] == 128
    assert failed[0].attributes["error.type"].endswith("Error")
    assert "trap" not in (failed[0].status.description or "").lower()  # type, not message
    # The batch itself is not failed: its rows were dead-lettered and the run went on.
    batch = by_id[failed[0].parent.span_id]
    assert batch.status.status_code is StatusCode.UNSET
    assert batch.attributes["dataflare.dead_letters"] == 128
    (run,) = [s for s in spans if s.name.startswith("dataflare.pipeline ")]
    assert run.status.status_code is StatusCode.UNSET
