"""Traces of a continuous run: the run never ends, so each checkpoint interval is a bounded
trace of its own (a root span linked to the run's span) holding that interval's batches
and the commit that closes it; the run's span is the child of the span current where the
run was started (the Dagster step), although the engine runs on its own thread."""

from opentelemetry.trace import SpanKind

from dataflare_platform.engine import RunnerConfig
from dataflare_platform.events.log import EventLog
from dataflare_platform.observability import ObservabilitySettings
from dataflare_platform.observability.tracing import configure_tracing, continued
from dataflare_platform.streams.continuous import ContinuousRun
from dataflare_platform.streams.ranges import load_specs
from dataflare_platform_tests.streams.test_continuous import _wait_for


def test_each_checkpoint_interval_is_a_bounded_trace_linked_to_the_run(
    span_memory, home, small_nexmark
):
    (spec,) = [s for s in load_specs() if s.name == "hot_items"]
    bids = small_nexmark["bids"]
    topic = EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema)
    topic.append(bids.slice(0, 1000))
    config = RunnerConfig(batch_rows=400, checkpoint_every=1000, checkpoint_interval_s=0.2)
    with continued("dagster.step run_hot_items_continuous") as step:
        run = ContinuousRun(
            spec, EventLog(home.event_log_dir), home.root / "streams", config=config
        ).start()
    assert step is not None
    reports = run.reports()
    _wait_for(reports, lambda r: r.events_in_total == 1000)
    topic.append(bids.slice(1000, 1000))
    _wait_for(reports, lambda r: r.events_in_total == 2000)
    # While the run goes on, the closed intervals are exported already.
    done = span_memory.get_finished_spans()
    assert any(s.name == "dataflare.checkpoint_interval hot_items" for s in done)
    assert not any(s.name == "dataflare.pipeline hot_items" for s in done)
    assert run.stop(30)
    list(reports)

    spans = span_memory.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    (pipeline,) = [s for s in spans if s.name == "dataflare.pipeline hot_items"]
    # Started on the engine's thread, still the child of the step's span.
    assert pipeline.parent.span_id == step.get_span_context().span_id
    assert pipeline.context.trace_id == step.get_span_context().trace_id
    intervals = [s for s in spans if s.name == "dataflare.checkpoint_interval hot_items"]
    assert len(intervals) >= 2
    numbers = sorted(s.attributes["dataflare.checkpoint_interval.number"] for s in intervals)
    assert numbers == list(range(1, len(intervals) + 1))
    for interval in intervals:
        assert interval.parent is None  # a root: one trace per interval
        assert interval.context.trace_id != pipeline.context.trace_id
        assert [link.context.span_id for link in interval.links] == [pipeline.context.span_id]
        assert interval.kind is SpanKind.CONSUMER
        assert interval.end_time <= pipeline.end_time
    batches = [s for s in spans if s.name == "process bids"]
    assert sum(b.attributes["messaging.batch.message_count"] for b in batches) == 2000
    # Every batch and every commit sits in exactly one interval, and each interval's
    # commit links exactly the batches of that interval.
    interval_ids = {i.context.span_id for i in intervals}
    outside = [
        (s.name, by_id[s.parent.span_id].name)
        for s in batches + [s for s in spans if s.name.startswith("send ")]
        if s.parent.span_id not in interval_ids
    ]
    assert outside == []
    for interval in intervals:
        inside = {
            b.context.span_id for b in batches if b.parent.span_id == interval.context.span_id
        }
        sends = [
            s
            for s in spans
            if s.name.startswith("send ") and s.parent.span_id == interval.context.span_id
        ]
        assert {link.context.span_id for s in sends for link in s.links} == inside


def test_unsampled_intervals_make_no_batch_spans(home, small_nexmark):
    tracing = configure_tracing(
        ObservabilitySettings(traces_exporter="memory", trace_sample_ratio=0.0)
    )
    try:
        (spec,) = [s for s in load_specs() if s.name == "hot_items"]
        bids = small_nexmark["bids"]
        EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema).append(bids)
        config = RunnerConfig(batch_rows=400, checkpoint_interval_s=0.2)
        run = ContinuousRun(
            spec, EventLog(home.event_log_dir), home.root / "streams", config=config
        ).start()
        reports = run.reports()
        _wait_for(reports, lambda r: r.events_in_total == bids.num_rows)
        assert run.stop(30)
        list(reports)
        assert tracing.memory.get_finished_spans() == ()
    finally:
        configure_tracing(None)
