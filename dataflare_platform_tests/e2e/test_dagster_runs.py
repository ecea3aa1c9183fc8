"""Runs of the shipped jobs in a real (temporary, SQLite) Dagster instance."""

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataflare_platform.datagen import SCHEMAS
from dataflare_platform.definitions import defs
from dataflare_platform.warehouse.connection import connect
from dataflare_platform.warehouse.stats import event_days

pytestmark = pytest.mark.e2e

STATS_KEY = dg.AssetKey(["nexmark", "daily_seller_stats"])


@pytest.fixture
def instance(landed_home):
    with dg.DagsterInstance.get() as inst:  # DAGSTER_HOME points into the temp home
        yield inst


def test_ingest_then_daily_partitions_are_recorded_in_the_instance(instance, landed_home):
    ingest = defs.resolve_job_def("nexmark_ingest_job").execute_in_process(instance=instance)
    assert ingest.success
    # The domain's own checks, and the governed datasets' (defs/governance/datasets/).
    assert {e.check_name: e.passed for e in ingest.get_asset_check_evaluations()} == {
        "bids_valid": True,
        "auctions_valid": True,
        "gx_nexmark_bids_suite": True,
        "schema_contract": True,
        "freshness_check": True,
        "pii_compliance": True,
    }
    with connect(landed_home.warehouse_path) as conn:
        days = [d.isoformat() for d in event_days(conn)]
    assert len(days) >= 2
    for day in days:
        run = defs.resolve_job_def("nexmark_daily_stats_job").execute_in_process(
            instance=instance, partition_key=day
        )
        assert run.success
        evaluations = {e.check_name: e.passed for e in run.get_asset_check_evaluations()}
        assert evaluations == {
            "daily_seller_stats_rules": True,
            "daily_category_stats_rules": True,
            "daily_person_activity_rules": True,
        }
    assert instance.get_materialized_partitions(STATS_KEY) == set(days)
    for kind in ("persons", "auctions", "bids"):
        event = instance.get_latest_materialization_event(dg.AssetKey(["nexmark", kind]))
        assert event.asset_materialization.metadata["dagster/row_count"].value > 0
    stored = instance.get_runs(filters=dg.RunsFilter(job_name="nexmark_daily_stats_job"))
    assert len(stored) == len(days)
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in stored)


def test_bad_landed_data_fails_a_blocking_check_in_a_real_run(instance, landed_home):
    bad = pa.table(
        {f.name: pa.array([None], f.type) for f in SCHEMAS["bids"]}, schema=SCHEMAS["bids"]
    ).set_column(2, "price", pa.array([-100], pa.int64()))
    pq.write_table(bad, landed_home.nexmark_dir / "bids" / "part-99999.parquet")
    result = defs.resolve_job_def("nexmark_ingest_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not evaluations["bids_valid"].passed
    assert evaluations["bids_valid"].metadata["failed_rows/price_positive"].value == 1
    assert evaluations["auctions_valid"].passed
    # A blocking check that fails with ERROR severity fails the run: it does not look green.
    assert not result.success


def test_corrupt_landed_file_fails_the_run_with_the_file_named(instance, landed_home):
    bad = landed_home.nexmark_dir / "auctions" / "part-00001.parquet"
    bad.write_bytes(b"not parquet")
    result = defs.resolve_job_def("nexmark_ingest_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert not result.success
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    messages = " ".join(str(e.event_specific_data.error.message) for e in failures)
    assert str(bad) in messages
