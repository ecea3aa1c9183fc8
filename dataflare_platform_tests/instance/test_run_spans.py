"""Every run and step of the instance as spans, from the handler the home's dagster.yaml
names (``python_logs.dagster_handler_config``): a real instance, real runs, the SDK's
in-memory exporter. Across processes (run worker, step processes, code server) the e2e
test ``e2e/test_traces.py`` checks the same tree over OTLP."""

from __future__ import annotations

import dagster as dg
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from dataflare_platform.observability.tracing import (
    configure_tracing,
    continued,
    derived_ids,
    inject,
    run_parent,
    tracer,
)


@dg.asset
def raw() -> int:
    return 1


@dg.asset
def refined(raw: int) -> int:
    t = tracer()
    if t is None:  # traces off
        return raw + 1
    with t.start_as_current_span("refine"):  # the step's own work
        return raw + 1


@dg.asset
def broken() -> int:
    raise RuntimeError("card 4111-1111 refused")


@pytest.fixture
def instance(home):
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as inst:
        yield inst


def test_the_instance_config_names_the_handler(instance):
    handlers = instance.get_handlers()
    assert "RunSpanHandler" in [type(h).__name__ for h in handlers]


def test_a_launched_run_continues_the_launch_trace_down_to_the_steps_work(span_memory, instance):
    with continued("dataflare.launch test", kind=SpanKind.PRODUCER) as launch:
        tags = inject({"dagster/partition": "2026-12-05", "dataflare/pipeline": "p"})
    assert launch is not None
    result = dg.materialize([raw, refined], instance=instance, tags=tags)
    assert result.success
    spans = span_memory.get_finished_spans()
    by_name = {s.name: s for s in spans}
    run = by_name["dagster.run __ephemeral_asset_job__"]
    assert run.kind is SpanKind.CONSUMER
    assert run.parent.span_id == launch.get_span_context().span_id
    assert run.context.trace_id == launch.get_span_context().trace_id
    # The run's span id is the one any process derives from the run id.
    assert run.context.span_id == derived_ids(result.run_id)[1]
    assert run.attributes["dagster.run_id"] == result.run_id
    assert run.attributes["dagster.partition"] == "2026-12-05"
    assert run.attributes["dataflare.pipeline"] == "p"
    steps = {s.attributes["dagster.step"]: s for s in spans if s.name.startswith("dagster.step")}
    assert set(steps) == {"raw", "refined"}
    for step in steps.values():
        assert step.parent.span_id == run.context.span_id
        assert step.status.status_code is StatusCode.UNSET
    assert by_name["refine"].parent.span_id == steps["refined"].context.span_id
    assert {s.context.trace_id for s in spans} == {launch.get_span_context().trace_id}


def test_a_run_without_a_launch_trace_is_a_root_its_steps_find_from_the_run_id(
    span_memory, instance
):
    result = dg.materialize([raw], instance=instance)
    spans = span_memory.get_finished_spans()
    (run,) = [s for s in spans if s.name.startswith("dagster.run")]
    assert run.parent is None
    trace_id, span_id = derived_ids(result.run_id)
    assert (run.context.trace_id, run.context.span_id) == (trace_id, span_id)
    (step,) = [s for s in spans if s.name == "dagster.step raw"]
    assert step.parent.span_id == span_id and step.context.trace_id == trace_id
    # What a step process in another process would compute as its parent.
    parent = run_parent(result.run_id, {})
    assert parent is not None


def test_a_failed_step_and_run_end_in_error_without_the_message(span_memory, instance):
    result = dg.materialize([broken], instance=instance, raise_on_error=False)
    assert not result.success
    spans = span_memory.get_finished_spans()
    failed = {s.name: s for s in spans if s.status.status_code is StatusCode.ERROR}
    assert set(failed) == {"dagster.run __ephemeral_asset_job__", "dagster.step broken"}
    for span in failed.values():
        assert "4111" not in (span.status.description or "")
        assert "4111" not in str(dict(span.attributes))


def test_traces_off_means_no_spans_and_runs_unaffected(instance):
    configure_tracing(None)
    assert dg.materialize([raw, refined], instance=instance, tags={}).success is True
    assert tracer() is None
