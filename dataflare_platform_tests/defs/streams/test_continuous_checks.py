"""Continuous runs are first-class assets (in process, on a real Dagster instance): the
asset's checks, including the governance component's blocking ``schema_contract``, are
evaluated with the run's materializations and tied to them; a failing blocking check
stops the pipeline with its reason and no retry; materializations carry the column
schema the micro-batch asset shows; progress is recorded at the progress interval, not
at every checkpoint."""

import os
import signal
import threading
import time

import dagster as dg
import pytest

from dataflare_platform.compliance.spec import GovernedDataset, load_dataset_spec
from dataflare_platform.component_files import DEFS_DIR
from dataflare_platform.connectors import duckdb as duckdb_connector
from dataflare_platform.defs.governance.dataset_checks import dataset_checks
from dataflare_platform.defs.streams.continuous import MAX_RETRIES_TAG
from dataflare_platform.defs.streams.factory import stream_definitions
from dataflare_platform.engine.checkpoint import Checkpoint
from dataflare_platform.events.log import EventLog
from dataflare_platform.streams.ranges import load_specs
from dataflare_platform_tests.defs.streams.test_continuous import (
    FAST,
    JOB,
    KEY,
    _interrupt_when,
    _latest,
)
from dataflare_platform_tests.defs.streams.test_factory import _resources, pipelines_dir  # noqa: F401

HOT_ITEMS_GOVERNANCE = DEFS_DIR / "governance" / "datasets" / "hot_items" / "defs.yaml"
CEILING_S = 300.0


def _governed(extra_columns: list[dict] | None = None) -> GovernedDataset:
    """The shipped governance of streams/hot_items, with ``extra_columns`` demanded by
    its contract (a contract the output cannot meet)."""
    spec = load_dataset_spec(HOT_ITEMS_GOVERNANCE)
    if not extra_columns:
        return spec
    data = spec.model_dump(mode="json", exclude_none=True)
    data["contract"]["columns"] += extra_columns
    return GovernedDataset.model_validate(data)


def _defs(home, pipelines_dir, governed: GovernedDataset) -> dg.Definitions:  # noqa: F811
    return dg.Definitions.merge(
        stream_definitions(load_specs(pipelines_dir), sensor_interval_s=5),
        dg.Definitions(asset_checks=dataset_checks(governed), resources=_resources(home)),
    )


def _run(defs, instance, config):
    """The job executed in process as a code location runs it: with its repository (what
    ``context.repository_def`` answers in the op; ``JobDefinition.execute_in_process``
    runs a job without one). Private Dagster API, pinned to 1.13 by these tests."""
    from dagster._core.definitions.job_base import RepoBackedJob
    from dagster._core.execution.execute_in_process import core_execute_in_process

    job = RepoBackedJob(JOB, defs.get_repository_def())
    return core_execute_in_process(
        run_config={"ops": {f"run_{JOB}": {"config": config}}},
        job=job,
        instance=instance,
        output_capturing_enabled=True,
        raise_on_error=False,
        run_tags=job.get_definition().tags,
    )


def _materializations(instance, run_id):
    records = instance.fetch_materializations(KEY, limit=1000).records
    return [r for r in records if r.run_id == run_id]


def _committed(home) -> Checkpoint | None:
    """The checkpoint the sink committed (readable while this process writes the file)."""
    path = home.root / "streams" / "hot_items.duckdb"
    if not path.exists():
        return None
    with duckdb_connector.reading(path) as conn:
        rows = conn.execute("SELECT state FROM dataflare_checkpoints").fetchall()
    return Checkpoint.decode(bytes(rows[0][0])) if rows else None


@pytest.fixture
def bids_topic(home, small_nexmark):
    bids = small_nexmark["bids"]
    return EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema), bids


def test_checks_run_with_each_materialization_and_columns_stay(home, pipelines_dir, bids_topic):  # noqa: F811
    topic, bids = bids_topic
    topic.append(bids.slice(0, 2000))
    defs = _defs(home, pipelines_dir, _governed())
    with dg.instance_for_test() as instance:
        watcher = _interrupt_when(instance, lambda m: m.get("events_in_total") == 2000)
        result = _run(defs, instance, FAST)
        watcher.join()
        assert result.success

        evaluations = result.get_asset_check_evaluations()
        assert {e.check_name for e in evaluations} == {"dead_letter_rate", "lag", "schema_contract"}
        assert all(e.passed for e in evaluations)
        # The lag check is evaluated by the run too (never blocking), in events and seconds
        # behind the topic's committed end; the last one saw everything processed.
        lag = [e for e in evaluations if e.check_name == "lag"]
        assert not any(e.blocking for e in lag)
        assert lag[-1].metadata["lag_events"].value == 0
        assert lag[-1].description.startswith("0 events, 0 s behind")
        figures = _latest(instance)["lag_per_partition"]
        assert figures and all(f["processed_event_ms"] for f in figures.values())
        contract = [e for e in evaluations if e.check_name == "schema_contract"]
        assert all(e.blocking for e in contract)
        assert contract[-1].description == "schema as declared"
        # Each evaluation is tied to a materialization of this run.
        stored = {r.storage_id for r in _materializations(instance, result.run_id)}
        assert stored
        for evaluation in evaluations:
            target = evaluation.target_materialization_data
            assert target.run_id == result.run_id and target.storage_id in stored
        # The instance's check records show the latest evaluation, not "not executed".
        record = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(KEY, "schema_contract"), limit=1
        )[0]
        assert record.run_id == result.run_id and record.status.value == "SUCCEEDED"

        continuous_schema = _latest(instance)["dagster/column_schema"]
        assert [c.name for c in continuous_schema.columns] == [
            "window_start",
            "window_end",
            "auction",
            "num",
        ]
        # The micro-batch asset shows the same columns.
        asset = defs.resolve_assets_def(KEY)
        micro = dg.materialize([asset], instance=instance)
        assert micro.success
        assert _latest(instance)["dagster/column_schema"] == continuous_schema


def test_a_failing_blocking_check_stops_the_pipeline_with_its_reason(
    home,
    pipelines_dir,  # noqa: F811
    bids_topic,
):
    topic, bids = bids_topic
    topic.append(bids.slice(0, 2000))
    seller = {"name": "seller", "type": "Int64", "nullable": False}
    defs = _defs(home, pipelines_dir, _governed([seller]))
    done = threading.Event()

    def watchdog():  # only if the run failed to stop itself: end it rather than hang
        if not done.wait(CEILING_S):
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watchdog, daemon=True).start()
    with dg.instance_for_test(overrides={"run_retries": {"enabled": True}}) as instance:
        try:
            result = _run(defs, instance, FAST)
        finally:
            done.set()
        assert not result.success
        (failure,) = result.get_step_failure_events()
        data = failure.step_failure_data
        assert data.error.cls_name == "Failure"
        reason = data.user_failure_data.description
        assert reason.startswith(
            "hot_items stopped: blocking check failed on streams/hot_items: schema_contract:"
        )
        assert "seller" in reason
        assert reason in (e.message for e in instance.all_logs(result.run_id))
        run = instance.get_run_by_id(result.run_id)
        assert run.status == dg.DagsterRunStatus.FAILURE
        assert run.tags[MAX_RETRIES_TAG] == "0"  # a retry would fail the same check

        # The instance has the failed evaluation (written as the op logged it).
        (record,) = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(KEY, "schema_contract"), limit=5
        )
        assert record.run_id == result.run_id and record.status.value == "FAILED"
        evaluation = record.event.dagster_event.event_specific_data
        assert not evaluation.passed and evaluation.blocking
        assert "column 'seller' (Int64) is missing" in evaluation.description
        # Stopped gracefully: what was reported is what the sink committed.
        committed = _committed(home)
        assert committed is not None
        assert committed.offsets == _latest(instance)["offsets"]


def test_progress_is_recorded_at_the_progress_interval(home, pipelines_dir, bids_topic):  # noqa: F811
    topic, bids = bids_topic
    topic.append(bids.slice(0, 1000))
    defs = _defs(home, pipelines_dir, _governed())
    config = {"checkpoint_interval_s": 0.2, "progress_interval_s": 3600.0}

    def drive():
        """Once the first progress is recorded, produce more; stop once the sink has
        committed it (checkpoints go on, materializations wait for the interval)."""
        deadline = time.monotonic() + CEILING_S
        while _latest(instance).get("events_in_total") != 1000:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        topic.append(bids.slice(1000, 1000))
        while (committed := _committed(home)) is None or committed.offsets != {"bids/0": 2000}:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    with dg.instance_for_test() as instance:
        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        result = _run(defs, instance, config)
        driver.join()
        assert result.success
        records = _materializations(instance, result.run_id)
        # The first checkpoint, then nothing until the final one at the stop.
        totals = sorted(r.asset_materialization.metadata["events_in_total"].value for r in records)
        assert totals == [1000, 2000]
        assert _latest(instance)["checkpoints"] >= 2
