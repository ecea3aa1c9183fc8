"""Each asset and check invoked directly, against a real DuckDB file in a temporary home."""

import dagster as dg
import pytest

from dataflare_platform.datagen import SCHEMAS
from dataflare_platform.defs.nexmark import assets, checks
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform.warehouse.connection import connect
from dataflare_platform.warehouse.stats import event_days


@pytest.fixture
def resource(landed_home) -> ProjectHomeResource:
    return ProjectHomeResource(path=str(landed_home.root))


@pytest.fixture
def loaded(resource) -> ProjectHomeResource:
    for table_asset in (assets.persons, assets.auctions, assets.bids):
        with dg.build_asset_context() as context:
            table_asset(context=context, dataflare=resource)
    return resource


@pytest.mark.parametrize("kind", ["persons", "auctions", "bids"])
def test_table_asset_loads_and_reports_rows_schema_and_preview(resource, kind):
    with dg.build_asset_context() as context:
        result = getattr(assets, kind)(context=context, dataflare=resource)
    meta = result.metadata
    with resource.warehouse() as conn:
        rows = conn.execute(f"SELECT count(*) FROM {quote_identifier(kind)}").fetchall()[0][0]
    assert meta["dagster/row_count"] == rows > 0
    assert meta["dagster/table_name"] == kind
    columns = [c.name for c in meta["dagster/column_schema"].columns]
    assert columns == SCHEMAS[kind].names
    assert meta["preview"].value.count("\n") == 6  # header, rule and 5 rows
    assert meta["files"] == 3


def test_corrupt_file_fails_the_asset_with_its_name(resource, landed_home):
    bad = landed_home.nexmark_dir / "bids" / "part-00007.parquet"
    bad.write_bytes(b"garbage")
    with dg.build_asset_context() as context, pytest.raises(dg.Failure) as err:
        assets.bids(context=context, dataflare=resource)
    assert str(bad) in err.value.description
    assert "not a readable parquet file" in err.value.description


def test_missing_landing_data_fails_clearly(home):
    resource = ProjectHomeResource(path=str(home.root))
    with dg.build_asset_context() as context, pytest.raises(dg.Failure, match="no event files"):
        assets.bids(context=context, dataflare=resource)


def test_daily_stats_asset_materializes_and_checks_its_partition(loaded):
    with loaded.warehouse() as conn:
        day = event_days(conn)[0].isoformat()
    with dg.build_asset_context(partition_key=day) as context:
        materialization, check = list(assets.daily_seller_stats(context=context, dataflare=loaded))
    assert isinstance(materialization, dg.MaterializeResult)
    assert materialization.metadata["dagster/row_count"] > 0
    assert isinstance(check, dg.AssetCheckResult)
    assert check.passed
    assert check.check_name == assets.DAILY_SELLER_STATS_CHECK


def test_daily_stats_check_fails_on_bad_data(loaded):
    with loaded.warehouse() as conn:
        day = event_days(conn)[0]
        conn.execute(
            "INSERT INTO bids SELECT auction, bidder, -price, channel, url, date_time, extra "
            "FROM bids WHERE CAST(date_time AS DATE) = $day LIMIT 50",
            {"day": day},
        )
    with dg.build_asset_context(partition_key=day.isoformat()) as context:
        _, check = list(assets.daily_seller_stats(context=context, dataflare=loaded))
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert any(key.startswith("failed_rows/") for key in check.metadata)


def test_table_checks_pass_on_good_data_and_fail_on_bad(loaded):
    assert checks.bids_valid(dataflare=loaded).passed
    assert checks.auctions_valid(dataflare=loaded).passed
    with loaded.warehouse() as conn:
        conn.execute("UPDATE bids SET price = -1 WHERE auction % 7 = 0")
        conn.execute("UPDATE auctions SET reserve = initial_bid - 1 WHERE id % 5 = 0")
        bad_bids = conn.execute("SELECT count(*) FROM bids WHERE price = -1").fetchall()[0][0]
    bids_result = checks.bids_valid(dataflare=loaded)
    assert not bids_result.passed
    assert bids_result.metadata["failed_rows/price_positive"].value == bad_bids
    assert "failing_samples" in bids_result.metadata
    assert not checks.auctions_valid(dataflare=loaded).passed


def test_resource_connection_closes_even_on_error(resource):
    with pytest.raises(RuntimeError), resource.warehouse():
        raise RuntimeError("boom")
    with connect(resource.home.warehouse_path) as conn:  # not locked by a leaked handle
        assert conn.execute("SELECT 1").fetchall() == [(1,)]


def test_daily_stats_partition_materializes_in_process_with_passing_checks(loaded):
    """The three daily assets run as one Dagster run for one partition: each records a
    materialization of that partition whose row count is the warehouse's for the day, and
    each check runs in the same run and passes."""
    with loaded.warehouse() as conn:
        day = event_days(conn)[-1]
    daily = [assets.daily_seller_stats, assets.daily_category_stats, assets.daily_person_activity]
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            daily,
            partition_key=day.isoformat(),
            resources={"dataflare": loaded},
            instance=instance,
        )
        assert result.success
        for asset in daily:
            key = asset.key
            table = key.path[-1]
            (event,) = result.asset_materializations_for_node(asset.op.name)
            assert event.partition == day.isoformat()
            with loaded.warehouse() as conn:
                rows = conn.execute(
                    f"SELECT count(*) FROM {quote_identifier(table)} WHERE day = $day", {"day": day}
                ).fetchall()[0][0]
            assert event.metadata["dagster/row_count"].value == rows > 0
            assert instance.get_materialized_partitions(key) == {day.isoformat()}
        evaluations = result.get_asset_check_evaluations()
        assert {e.check_name for e in evaluations} == {
            assets.DAILY_SELLER_STATS_CHECK,
            assets.DAILY_CATEGORY_STATS_CHECK,
            assets.DAILY_PERSON_ACTIVITY_CHECK,
        }
        assert all(e.passed for e in evaluations)


def test_rematerializing_a_partition_replaces_only_that_day(loaded):
    """A second run of another day adds that day's rows and leaves the first day's alone,
    and re-running a day keeps its row count (the backfill contract)."""
    with loaded.warehouse() as conn:
        first, second = event_days(conn)[:2]
    daily = [assets.daily_category_stats, assets.daily_person_activity]

    def counts() -> dict[tuple[str, str], int]:
        with loaded.warehouse() as conn:
            rows = conn.execute(
                "SELECT 'category', CAST(day AS VARCHAR), count(*) FROM daily_category_stats "
                "GROUP BY ALL UNION ALL "
                "SELECT 'person', CAST(day AS VARCHAR), count(*) FROM daily_person_activity "
                "GROUP BY ALL"
            ).fetchall()
        return {(kind, day): n for kind, day, n in rows}

    def run(day) -> None:
        result = dg.materialize(
            daily, partition_key=day.isoformat(), resources={"dataflare": loaded}
        )
        assert result.success

    run(first)
    after_first = counts()
    run(second)
    after_two = counts()
    assert {day for _, day in after_two} == {first.isoformat(), second.isoformat()}
    assert {k: n for k, n in after_two.items() if k[1] == first.isoformat()} == after_first
    run(first)
    assert counts() == after_two


def test_new_daily_assets_are_eager_and_in_the_daily_job():
    """Automation and scheduling as documented: eager on the warehouse tables, and the
    scheduled daily job (hence its backfills) covers all three daily tables."""
    from dataflare_platform.definitions import defs

    job = defs.resolve_job_def("nexmark_daily_stats_job")
    assert set(job.asset_layer.executable_asset_keys) == {
        assets.DAILY_SELLER_STATS_KEY,
        assets.DAILY_CATEGORY_STATS_KEY,
        assets.DAILY_PERSON_ACTIVITY_KEY,
    }
    graph = defs.resolve_asset_graph()
    for key in (assets.DAILY_CATEGORY_STATS_KEY, assets.DAILY_PERSON_ACTIVITY_KEY):
        node = graph.get(key)
        assert node.automation_condition.get_label() == "eager"
        assert node.partitions_def == assets.daily_partitions
        assert node.owners == assets.OWNERS
    assert {k.path[-1] for k in graph.get(assets.DAILY_PERSON_ACTIVITY_KEY).parent_keys} == {
        "persons",
        "auctions",
        "bids",
    }


def test_every_warehouse_step_of_the_ingest_job_takes_its_turn():
    """The wiring behind one writer per DuckDB file inside a run (defs/pools.py): each
    step of nexmark_ingest_job that opens the warehouse carries the warehouse's file tag,
    and the job's multiprocess executor runs one step per tag value at a time."""
    from dataflare_platform.definitions import defs
    from dataflare_platform.defs.pools import DUCKDB_FILE_TAG, WAREHOUSE_POOL

    job = defs.resolve_job_def("nexmark_ingest_job")
    tags = {name: node.tags.get(DUCKDB_FILE_TAG) for name, node in job.graph.node_dict.items()}
    opening = {name for name in tags if not name.startswith("freshness_check")}
    assert opening >= {"nexmark__persons", "nexmark__auctions", "nexmark__bids"}
    assert {name for name, tag in tags.items() if tag == WAREHOUSE_POOL} == opening
    assert job.executor_def.name == "multiprocess_one_writer_per_duckdb_file"
    # and a selection materialized from the UI runs under the same executor
    implicit = defs.resolve_implicit_global_asset_job_def()
    assert implicit.executor_def.name == job.executor_def.name
