"""The continuous job in process: checkpoints become materializations of the pipeline's
asset, an interrupt (what terminating a run sends) stops it gracefully with a final
checkpoint, the next launch resumes; the restart sensor relaunches failed runs a bounded
number of times; the micro-batch sensor stands aside while a continuous run is active."""

import os
import signal
import threading
import time

import dagster as dg
import pytest

from dataflare_platform.defs.streams.continuous import ATTEMPT_TAG, MAX_RESTARTS
from dataflare_platform.defs.streams.factory import stream_definitions
from dataflare_platform.events.log import EventLog
from dataflare_platform.pipelines import load_specs
from dataflare_platform_tests.defs.streams.test_factory import _resources, pipelines_dir  # noqa: F401

KEY = dg.AssetKey(["streams", "hot_items"])
JOB = "hot_items_continuous"
RUN_CONFIG = {"ops": {f"run_{JOB}": {"config": {"checkpoint_interval_s": 0.2}}}}


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
    latest metadata satisfies ``predicate``."""

    def watch():
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not predicate(_latest(instance)):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _run(defs, instance, **kwargs):
    job = defs.resolve_job_def(JOB)
    return job.execute_in_process(
        run_config=RUN_CONFIG, instance=instance, raise_on_error=False, **kwargs
    )


def test_interrupted_run_checkpoints_and_the_next_one_resumes(defs, home, small_nexmark):
    bids = small_nexmark["bids"]
    topic = EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema)
    topic.append(bids.slice(0, 2000))
    with dg.instance_for_test() as instance:
        watcher = _interrupt_when(instance, lambda m: m.get("events_in_total") == 2000)
        first = _run(defs, instance)
        watcher.join()
        assert not first.success
        meta = _latest(instance)
        assert meta["events_in"] == 2000 and meta["lag_events"] == 0
        assert meta["offsets"] == {"bids/0": 2000}
        assert {"events_out", "dead_lettered", "late_events", "events_per_s"} <= set(meta)
        assert {"p99_batch_ms", "watermark_ms"} <= set(meta)
        assert all(isinstance(v, int | float) for k, v in meta.items() if k != "offsets")
        logs = [e.message for e in instance.all_logs(first.run_id)]
        assert any("finishing the batch and checkpointing" in m for m in logs)

        topic.append(bids.slice(2000))
        total = bids.num_rows
        watcher = _interrupt_when(instance, lambda m: m.get("events_in_total") == total)
        second = _run(defs, instance)
        watcher.join()
        meta = _latest(instance)
        assert meta["events_in"] == total - 2000  # resumed: nothing read again
        assert meta["events_in_total"] == total
        assert second.run_id != first.run_id


def _failure_context(instance, run_id):
    (entry,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return dg.build_run_status_sensor_context(
        sensor_name=f"{JOB}_restart",
        dagster_event=entry.dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run_id),
    ).for_run_failure()


def test_failed_runs_are_restarted_a_bounded_number_of_times(defs):
    sensor = defs.resolve_sensor_def(f"{JOB}_restart")
    with dg.instance_for_test() as instance:
        failed = _run(defs, instance)  # no topic yet: the run fails
        assert not failed.success
        request = sensor(_failure_context(instance, failed.run_id))
        assert isinstance(request, dg.RunRequest)
        assert request.tags[ATTEMPT_TAG] == "1"
        assert request.run_key == f"restart:{failed.run_id}"
        assert request.run_config == RUN_CONFIG

        again = _run(defs, instance, tags={ATTEMPT_TAG: str(MAX_RESTARTS)})
        skipped = sensor(_failure_context(instance, again.run_id))
        assert isinstance(skipped, dg.SkipReason) and "giving up" in skipped.skip_message


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
        assert isinstance(result, dg.SkipReason) and "continuously" in result.skip_message
