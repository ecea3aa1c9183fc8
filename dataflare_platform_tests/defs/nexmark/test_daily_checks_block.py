"""The daily statistics' rules are blocking: a real run (an ephemeral Dagster instance,
the shipped daily job's three assets plus an asset downstream of each) fails on a day
whose data is inconsistent and does not run the downstream assets, and succeeds on a
consistent day."""

import dagster as dg
import pytest

from dataflare_platform.defs.nexmark import assets
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.warehouse.stats import event_days

DAILY = [assets.daily_seller_stats, assets.daily_category_stats, assets.daily_person_activity]
CHECKS = {
    assets.DAILY_SELLER_STATS_KEY: assets.DAILY_SELLER_STATS_CHECK,
    assets.DAILY_CATEGORY_STATS_KEY: assets.DAILY_CATEGORY_STATS_CHECK,
    assets.DAILY_PERSON_ACTIVITY_KEY: assets.DAILY_PERSON_ACTIVITY_CHECK,
}


def downstream_of(daily: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """A report built on one daily table: it must never run on a day that failed."""

    @dg.asset(
        key=["report", daily.key.path[-1]],
        deps=[daily],
        partitions_def=assets.daily_partitions,
    )
    def _report() -> None:
        return None

    return _report


REPORTS = {daily.key: downstream_of(daily) for daily in DAILY}


@pytest.fixture
def loaded(landed_home) -> ProjectHomeResource:
    resource = ProjectHomeResource(path=str(landed_home.root))
    for table_asset in (assets.persons, assets.auctions, assets.bids):
        with dg.build_asset_context() as context:
            table_asset(context=context, dataflare=resource)
    return resource


def run_day(resource: ProjectHomeResource, day: str) -> dg.ExecuteInProcessResult:
    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize(
            [*DAILY, *REPORTS.values()],
            partition_key=day,
            resources={"dataflare": resource},
            instance=instance,
            raise_on_error=False,
        )


def test_inconsistent_day_fails_its_run_and_stops_downstream(loaded):
    with loaded.warehouse() as conn:
        bad, good = (d.isoformat() for d in event_days(conn)[:2])
        # Every bid of the bad day turned negative: sellers' minimum bid, the winning prices
        # of auctions closing that day and persons' amounts all break their rules.
        conn.execute(
            "UPDATE bids SET price = -price WHERE CAST(date_time AS DATE) = $day", {"day": bad}
        )

    result = run_day(loaded, bad)

    assert not result.success
    evaluations = {e.asset_key: e for e in result.get_asset_check_evaluations()}
    assert {key: evaluations[key].check_name for key in CHECKS} == CHECKS
    for key in CHECKS:
        assert not evaluations[key].passed, key
        assert evaluations[key].severity == dg.AssetCheckSeverity.ERROR
    failed = {e.step_key for e in result.all_events if e.is_step_failure}
    assert failed == {daily.op.name for daily in DAILY}
    for report in REPORTS.values():
        assert result.asset_materializations_for_node(report.op.name) == []
    started = {e.step_key for e in result.all_events if e.is_step_start}
    assert started == {daily.op.name for daily in DAILY}  # no report step ever started

    result = run_day(loaded, good)

    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    for report in REPORTS.values():
        (event,) = result.asset_materializations_for_node(report.op.name)
        assert event.partition == good
