"""The continuous job in process: checkpoints become materializations of the pipeline's
asset, an interrupt (what terminating a run sends) stops it gracefully with a final
checkpoint, the next launch resumes; a failed run is left to Dagster's run retries
(bounded by the job's ``dagster/max_retries`` tag, a duplicate launch opted out) and a
retry waits a growing delay before resuming; the micro-batch sensor stands aside while a
continuous run is active."""

import dagster as dg
import pytest

from dataflare_platform.defs.streams.continuous import (
    ATTEMPT_TAG,
    MAX_RESTART_BACKOFF_S,
    MAX_RESTARTS,
    MAX_RETRIES_TAG,
    WILL_RETRY_TAG,
    restart_delay_s,
)
from dataflare_platform.defs.streams.factory import stream_definitions
from dataflare_platform.events.log import EventLog
from dataflare_platform.streams.ranges import load_specs
from dataflare_platform_tests.defs.streams.test_factory import _resources, pipelines_dir  # noqa: F401
from dataflare_platform_tests.waits import interrupt_when

KEY = dg.AssetKey(["streams", "hot_items"])
JOB = "hot_items_continuous"
# Progress recorded at every checkpoint here, so the tests can follow it.
FAST = {"checkpoint_interval_s": 0.2, "progress_interval_s": 0.01}
RUN_CONFIG = {"ops": {f"run_{JOB}": {"config": FAST}}}


@pytest.fixture
def defs(home, pipelines_dir):  # noqa: F811
    return dg.Definitions.merge(
        stream_definitions(load_specs(pipelines_dir), sensor_interval_s=5),
        dg.Definitions(resources=_resources(home)),
    )


def _latest(instance) -> dict:
    event = instance.get_latest_materialization_event(KEY)
    if event is None:
        return {}
    return {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}


def _interrupt_when(instance, predicate, timeout_s=60.0):
    """SIGINT this process (as Dagster does to a run it terminates) once the asset's
    latest metadata satisfies ``predicate``, or after ``timeout_s``."""
    return interrupt_when(lambda: predicate(_latest(instance)), timeout_s=timeout_s)


def _run(defs, instance, run_config=RUN_CONFIG, **kwargs):
    job = defs.resolve_job_def(JOB)
    return job.execute_in_process(
        run_config=run_config, instance=instance, raise_on_error=False, **kwargs
    )


def test_interrupted_run_checkpoints_and_the_next_one_resumes(defs, home, small_nexmark):
    bids = small_nexmark["bids"]
    topic = EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema)
    topic.append(bids.slice(0, 2000))
    with dg.instance_for_test() as instance:
        watcher = _interrupt_when(instance, lambda m: m.get("events_in_total") == 2000)
        first = _run(defs, instance)
        watcher.join()
        # A graceful stop is a clean end: the step succeeds, nothing is a failure.
        assert first.success and not first.get_step_failure_events()
        meta = _latest(instance)
        assert meta["events_in"] == 2000 and meta["lag_events"] == 0
        assert meta["offsets"] == {"bids/0": 2000}
        assert {"events_out", "dead_lettered", "late_events", "events_per_s"} <= set(meta)
        assert {"p99_batch_ms", "watermark_ms"} <= set(meta)
        assert {"events_per_s_lifetime", "checkpoint_at", "lag_by_partition"} <= set(meta)
        assert meta["lag_by_partition"] == {"bids/0": 0}
        structured = {"offsets", "lag_by_partition", "lag_per_partition", "dagster/column_schema"}
        assert all(isinstance(v, int | float) for k, v in meta.items() if k not in structured)
        logs = [e.message for e in instance.all_logs(first.run_id)]
        assert any("finishing the batch and checkpointing" in m for m in logs)
        assert any("final checkpoint committed at {'bids/0': 2000}" in m for m in logs)

        topic.append(bids.slice(2000))
        total = bids.num_rows
        watcher = _interrupt_when(instance, lambda m: m.get("events_in_total") == total)
        second = _run(defs, instance)
        watcher.join()
        meta = _latest(instance)
        assert meta["events_in"] == total - 2000  # resumed: nothing read again
        assert meta["events_in_total"] == total
        assert second.run_id != first.run_id


RETRIES_ON = {"run_retries": {"enabled": True}}


def test_a_failed_run_is_left_to_dagster_run_retries_with_a_bound(defs):
    # One restart mechanism: Dagster's run retries, opted into by the job's tag.
    assert not [s.name for s in defs.sensors if s.name.startswith(JOB)]
    assert defs.resolve_job_def(JOB).tags[MAX_RETRIES_TAG] == str(MAX_RESTARTS)
    with dg.instance_for_test(overrides=RETRIES_ON) as instance:
        failed = _run(defs, instance)  # no topic yet: the run fails
        assert not failed.success
        run = instance.get_run_by_id(failed.run_id)
        assert run.tags[MAX_RETRIES_TAG] == str(MAX_RESTARTS)
        assert run.tags[WILL_RETRY_TAG] == "true"  # Dagster's decision, taken at failure


def test_a_duplicate_launch_fails_and_opts_out_of_retries(defs):
    with dg.instance_for_test(overrides=RETRIES_ON) as instance:
        instance.add_run(
            dg.DagsterRun(
                job_name=JOB, run_id="a-continuous-run", status=dg.DagsterRunStatus.STARTED
            )
        )
        duplicate = _run(defs, instance)
        assert not duplicate.success
        run = instance.get_run_by_id(duplicate.run_id)
        assert run.tags[MAX_RETRIES_TAG] == "0" and run.tags[WILL_RETRY_TAG] == "false"
        (failure,) = duplicate.get_step_failure_events()
        error = failure.step_failure_data.error.message
        assert "already runs continuously in run(s) ['a-continuous-run']" in error
        assert "worker" not in error


def test_a_launch_while_worker_runs_own_the_pipeline_names_them_and_how_to_stop_them(defs):
    with dg.instance_for_test(overrides=RETRIES_ON) as instance:
        for run_id in ("worker-0", "worker-1"):
            instance.add_run(
                dg.DagsterRun(
                    job_name="hot_items_workers", run_id=run_id, status=dg.DagsterRunStatus.STARTED
                )
            )
        refused = _run(defs, instance)
        assert not refused.success
        run = instance.get_run_by_id(refused.run_id)
        assert run.tags[MAX_RETRIES_TAG] == "0" and run.tags[WILL_RETRY_TAG] == "false"
        (failure,) = refused.get_step_failure_events()
        error = failure.step_failure_data.error.message
        assert "hot_items runs as 2 partition-parallel worker run(s)" in error
        assert "'worker-0'" in error and "'worker-1'" in error
        assert "`dataflare scale hot_items --workers 0` stops them" in error
        assert "already runs continuously" not in error
        # Both at once: each cause named.
        instance.add_run(
            dg.DagsterRun(
                job_name=JOB, run_id="a-continuous-run", status=dg.DagsterRunStatus.STARTED
            )
        )
        (failure,) = _run(defs, instance).get_step_failure_events()
        error = failure.step_failure_data.error.message
        assert "already runs continuously in run(s) ['a-continuous-run']" in error
        assert "runs as 2 partition-parallel worker run(s)" in error


def test_restart_delay_grows_per_attempt_and_is_capped():
    assert restart_delay_s(0, 5.0) == 0.0  # a normal launch starts at once
    assert [restart_delay_s(n, 5.0) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    assert restart_delay_s(30, 5.0) == MAX_RESTART_BACKOFF_S
    assert restart_delay_s(2, 0.0) == 0.0


def test_a_retry_waits_its_backoff_then_resumes(defs, home, small_nexmark):
    bids = small_nexmark["bids"]
    EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema).append(bids)
    config = {"ops": {f"run_{JOB}": {"config": {**FAST, "restart_backoff_s": 0.1}}}}
    with dg.instance_for_test() as instance:  # run_retries off: the op says so
        watcher = _interrupt_when(instance, lambda m: m.get("events_in_total") == bids.num_rows)
        retry = _run(defs, instance, run_config=config, tags={ATTEMPT_TAG: "2"})
        watcher.join()
        assert retry.success  # stopped gracefully, as a terminated run is
        logs = [e.message for e in instance.all_logs(retry.run_id)]
        assert any(
            "automatic restart 2 of 3 (after run None); resuming in 0.2 s" in m for m in logs
        )
        assert any("run_retries is off" in m for m in logs)
        assert _latest(instance)["events_in"] == bids.num_rows


def test_micro_batch_sensor_skips_while_a_continuous_run_is_active(defs, home, small_nexmark):
    bids = small_nexmark["bids"]
    EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema).append(bids)
    sensor = defs.resolve_sensor_def("hot_items_sensor")
    with dg.instance_for_test() as instance:
        instance.add_run(
            dg.DagsterRun(
                job_name=JOB, run_id="a-continuous-run", status=dg.DagsterRunStatus.STARTED
            )
        )
        with dg.build_sensor_context(instance=instance, resources=_resources(home)) as context:
            result = sensor(context)
        assert isinstance(result, dg.SkipReason)
        assert result.skip_message == "hot_items runs continuously in run(s) ['a-continuous-run']"


def test_micro_batch_sensor_names_the_worker_runs_it_stands_aside_for(defs, home, small_nexmark):
    """Worker runs (``<pipeline>_workers``), not a continuous run, hold the pipeline: the
    skip reason says so, with their run ids, and does not claim a continuous run."""
    bids = small_nexmark["bids"]
    EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema).append(bids)
    sensor = defs.resolve_sensor_def("hot_items_sensor")
    with dg.instance_for_test() as instance:
        for run_id in ("worker-0", "worker-1"):
            instance.add_run(
                dg.DagsterRun(
                    job_name="hot_items_workers", run_id=run_id, status=dg.DagsterRunStatus.STARTED
                )
            )
        with dg.build_sensor_context(instance=instance, resources=_resources(home)) as context:
            result = sensor(context)
        assert isinstance(result, dg.SkipReason)
        message = result.skip_message
        assert message.startswith("hot_items runs as 2 partition-parallel worker run(s) [")
        assert "'worker-0'" in message and "'worker-1'" in message
        assert "continuously" not in message
        # Both at once (a transition): both named.
        instance.add_run(
            dg.DagsterRun(
                job_name=JOB, run_id="a-continuous-run", status=dg.DagsterRunStatus.STARTED
            )
        )
        with dg.build_sensor_context(instance=instance, resources=_resources(home)) as context:
            both = sensor(context).skip_message
        assert both.startswith("hot_items runs continuously in run(s) ['a-continuous-run'] and")
        assert "2 partition-parallel worker run(s)" in both


def test_an_idle_stream_reports_a_zero_current_rate(defs, home, small_nexmark):
    """Once no checkpoint has come for a whole rate window, the asset's current rate
    drops to 0 instead of keeping the last busy figure (the lifetime rate stays)."""
    bids = small_nexmark["bids"]
    EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema).append(
        bids.slice(0, 2000)
    )
    config = {"ops": {f"run_{JOB}": {"config": {**FAST, "rate_window_s": 0.5}}}}
    with dg.instance_for_test() as instance:
        watcher = _interrupt_when(
            instance, lambda m: m.get("events_in") == 2000 and m.get("events_per_s") == 0
        )
        result = _run(defs, instance, run_config=config)
        watcher.join()
        assert result.success
        assert watcher.matched.is_set()  # reported idle while running, not only at the stop
        records = instance.fetch_materializations(KEY, limit=100).records
        rates = [
            (
                r.asset_materialization.metadata["events_per_s"].value,
                r.asset_materialization.metadata["offsets"].value,
            )
            for r in reversed(records)
        ]
        busy = [i for i, (rate, _) in enumerate(rates) if rate > 0]
        assert busy, rates
        idle_rate, idle_offsets = rates[-1]
        assert idle_rate == 0 and idle_offsets == {"bids/0": 2000}
        assert rates[busy[-1]][1] == idle_offsets  # same checkpoint, now reported idle
        assert _latest(instance)["events_per_s_lifetime"] > 0
