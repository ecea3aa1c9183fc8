"""Asset freshness against Dagster 1.13 FreshnessPolicy: the exporter reads the policies
from real Definitions and the materializations from a real instance."""

from __future__ import annotations

import time
from datetime import timedelta

import dagster as dg
import pytest

from dataflare_platform import observability
from dataflare_platform.instance.exporter import InstanceExporter, freshness_policies
from dataflare_platform.observability.prometheus import exposition
from dataflare_platform_tests.observability.fixtures import metrics_dir
from dataflare_platform_tests.observability.scrape import value

__all__ = ["metrics_dir"]


@dg.asset(freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=1)))
def hourly() -> None:
    pass


@dg.asset(
    freshness_policy=dg.FreshnessPolicy.cron(
        deadline_cron="0 * * * *", lower_bound_delta=timedelta(minutes=30)
    )
)
def on_the_hour() -> None:
    pass


@dg.asset(freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=5)))
def never_built() -> None:
    pass


@dg.asset
def no_policy() -> None:
    pass


DEFS = dg.Definitions(assets=[hourly, on_the_hour, never_built, no_policy])


def test_policies_come_from_the_definitions():
    policies = freshness_policies(DEFS)
    assert set(policies) == {hourly.key, on_the_hour.key, never_built.key}


def test_fresh_then_overdue_against_the_policy(metrics_dir):
    with dg.DagsterInstance.ephemeral() as instance:
        exporter = InstanceExporter(instance, observability.instruments(), freshness_policies(DEFS))
        dg.materialize([hourly, on_the_hour, no_policy], instance=instance)
        now = time.time()
        exporter.collect(now)
        text = exposition(metrics_dir)
        limit = "dataflare_dagster_asset_freshness_limit_seconds"
        assert value(text, limit, asset="hourly", policy="time_window") == 3600
        assert value(text, "dataflare_dagster_asset_fresh", asset="hourly") == 1
        assert value(text, "dataflare_dagster_asset_overdue_seconds", asset="hourly") == 0
        # cron: materialized after the last deadline minus 30 min, so within the limit;
        # the limit is now minus (last top of the hour - 30 min): 30 to 90 minutes.
        cron_limit = value(text, limit, asset="on_the_hour", policy="cron")
        assert 1800 <= cron_limit < 5400
        assert value(text, "dataflare_dagster_asset_fresh", asset="on_the_hour") == 1
        # Never materialized: not fresh, overdue by its whole window.
        assert value(text, "dataflare_dagster_asset_fresh", asset="never_built") == 0
        assert value(text, "dataflare_dagster_asset_overdue_seconds", asset="never_built") == 300
        # No policy: age only.
        assert value(text, "dataflare_dagster_asset_fresh", asset="no_policy") is None
        age = "dataflare_dagster_asset_materialization_age_seconds"
        assert value(text, age, asset="no_policy") is not None
        # Two hours on, nothing materialized again: both policies are missed.
        exporter.collect(now + 7200)
        text = exposition(metrics_dir)
        assert value(text, "dataflare_dagster_asset_fresh", asset="hourly") == 0
        built = instance.get_latest_materialization_event(hourly.key).timestamp
        overdue = value(text, "dataflare_dagster_asset_overdue_seconds", asset="hourly")
        assert overdue == pytest.approx(now + 7200 - built - 3600)
        assert value(text, "dataflare_dagster_asset_fresh", asset="on_the_hour") == 0
