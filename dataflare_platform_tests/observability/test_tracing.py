"""Traces in one process: the engine's span tree under a launch, with the SDK's in-memory
exporter (the real SDK, sampler and propagator; only the export goes to span_memory)."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, Stream, TableSource
from dataflare_platform.errors import ConfigError
from dataflare_platform.observability import ObservabilitySettings
from dataflare_platform.observability.tracing import (
    TRACEPARENT_TAG,
    configure_tracing,
    context_from_tags,
    continued,
    inject,
    tracer,
)
from dataflare_platform_tests.engine.helpers import events
from dataflare_platform_tests.engine.test_operators import CountingPlugin


def two_partitions_with_a_plugin(sink):
    source = TableSource(
        "bids", {"a": events(range(0, 3_000, 10)), "b": events(range(5, 3_000, 10))}
    )
    return Stream.source(source).plugin(CountingPlugin()).sink(sink)


def test_a_run_launched_under_a_trace_forms_one_tree_with_batches_plugins_and_links(span_memory):
    sink = CollectSink()
    pipeline = two_partitions_with_a_plugin(sink)
    with continued("dataflare.launch test", kind=SpanKind.PRODUCER) as launch:
        tags = inject({})
    assert launch is not None
    # The run (another process in production) continues from the tag alone.
    with continued("dagster.run r1", tags=tags):
        result = Runner(pipeline, RunnerConfig(batch_rows=50, checkpoint_every=4)).run()
    spans = span_memory.get_finished_spans()
    trace_ids = {s.context.trace_id for s in spans}
    assert trace_ids == {launch.get_span_context().trace_id}
    by_id = {s.context.span_id: s for s in spans}
    (run,) = [s for s in spans if s.name == f"dataflare.pipeline {pipeline.name}"]
    assert by_id[run.parent.span_id].name == "dagster.run r1"
    assert by_id[by_id[run.parent.span_id].parent.span_id].name == "dataflare.launch test"
    batches = [s for s in spans if s.name == "process bids"]
    assert len(batches) == result.metrics.batches == 12
    for b in batches:
        assert b.kind is SpanKind.CONSUMER
        assert b.parent.span_id == run.context.span_id
        a = b.attributes
        assert a["messaging.system"] == "dataflare"
        assert a["messaging.destination.name"] == "bids"
        assert a["messaging.operation.type"] == "process"
        assert a["messaging.batch.message_count"] == 50
        assert a["messaging.destination.partition.id"] in ("a", "b")
        assert a["dataflare.offset.end"] - a["dataflare.offset.start"] == 50
    plugin_calls = [s for s in spans if s.name.startswith("dataflare.plugin ")]
    assert len(plugin_calls) == len(batches)
    assert {by_id[p.parent.span_id].name for p in plugin_calls} == {"process bids"}
    assert all(p.attributes["dataflare.plugin.rows_in"] == 50 for p in plugin_calls)
    sends = [s for s in spans if s.kind is SpanKind.PRODUCER and s.name.startswith("send ")]
    linked = [link.context.span_id for s in sends for link in s.links]
    # Every batch reaches the sink through exactly one send; a send merges several
    # batches (both partitions), and says how many.
    assert sorted(linked) == sorted(b.context.span_id for b in batches)
    assert max(len(s.links) for s in sends) == 4
    merged = next(s for s in sends if len(s.links) == 4)
    partitions = {
        by_id[link.context.span_id].attributes["messaging.destination.partition.id"]
        for link in merged.links
    }
    assert partitions == {"a", "b"}
    assert sum(s.attributes["messaging.batch.message_count"] for s in sends) == 600
    assert all(s.parent.span_id == run.context.span_id for s in sends)


def test_a_failing_run_ends_its_span_with_the_error_type_only(span_memory):
    class Exploding(CountingPlugin):
        def __call__(self, batch):
            raise RuntimeError("secret value 4111-1111")

    source = TableSource.single("e", events(range(0, 100, 10)))
    pipeline = Stream.source(source).plugin(Exploding()).sink(CollectSink())
    with pytest.raises(RuntimeError):
        Runner(pipeline, RunnerConfig(batch_rows=5)).run()
    spans = span_memory.get_finished_spans()
    failed = [s for s in spans if s.status.status_code is StatusCode.ERROR]
    assert {s.name.split(" ")[0] for s in failed} == {
        "dataflare.pipeline",
        "process",
        "dataflare.plugin",
    }
    for s in failed:
        assert s.attributes["error.type"] == "RuntimeError"
        assert "4111" not in (s.status.description or "")


def test_sampling_is_decided_at_the_root_and_unsampled_runs_make_no_batch_spans():
    tracing = configure_tracing(
        ObservabilitySettings(traces_exporter="memory", trace_sample_ratio=0.0)
    )
    try:
        pipeline = two_partitions_with_a_plugin(CollectSink())
        Runner(pipeline, RunnerConfig(batch_rows=50)).run()
        assert tracing.memory.get_finished_spans() == ()
        # A sampled parent (from a tag) wins over the ratio: the trace is whole.
        tags = {TRACEPARENT_TAG: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        with continued("dagster.run r2", tags=tags):
            Runner(two_partitions_with_a_plugin(CollectSink()), RunnerConfig(batch_rows=50)).run()
        spans = tracing.memory.get_finished_spans()
        assert len(spans) > 12
        assert {s.context.trace_id for s in spans} == {0x0AF7651916CD43DD8448EB211C80319C}
    finally:
        configure_tracing(None)


def test_traces_off_is_the_default_and_bad_tags_start_a_new_trace(monkeypatch):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_TRACES_SAMPLER_ARG"):
        monkeypatch.delenv(name, raising=False)
    configure_tracing(ObservabilitySettings.from_env())
    assert tracer() is None
    with continued("x", tags={TRACEPARENT_TAG: "garbage"}) as span:
        assert span is None
    assert inject({"k": "v"}) == {"k": "v"}  # no current span: nothing added
    assert context_from_tags({TRACEPARENT_TAG: "00-" + "0" * 32 + "-" + "0" * 16 + "-01"}) is None
    assert context_from_tags({TRACEPARENT_TAG: "not a traceparent"}) is None
    assert trace.get_current_span().get_span_context().is_valid is False


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "traces_exporter"),
        ({"OTEL_TRACES_SAMPLER_ARG": "often"}, "OTEL_TRACES_SAMPLER_ARG"),
        ({"OTEL_TRACES_SAMPLER_ARG": "1.5"}, "trace_sample_ratio"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:pw@collector:4318"}, "credentials"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://u:p/pw@c:4318/v1/traces"}, "credentials"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://tokenpw@c:4318/v1/traces"}, "credentials"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4318"}, "otlp_traces_endpoint"),
    ],
)
def test_bad_trace_settings_are_one_error_naming_the_field(env, field):
    with pytest.raises(ConfigError, match=field) as err:
        ObservabilitySettings.from_env(env)
    assert "pw" not in str(err.value)


def test_trace_settings_from_the_standard_variables():
    s = ObservabilitySettings.from_env(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_TRACES_SAMPLER_ARG": "0.01",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/",
        }
    )
    assert (s.traces_exporter, s.trace_sample_ratio) == ("otlp", 0.01)
    assert s.otlp_traces_endpoint == "http://127.0.0.1:4318/v1/traces"
    assert ObservabilitySettings.from_env({}).traces_exporter == "none"
