"""The daily statistics' ``eager`` condition, evaluated on the real definitions against
a real instance: once every upstream warehouse table has been loaded, the latest complete
UTC day of each statistics table is requested, and a reload requests it again; nothing is
requested while an upstream table was never loaded. The code location's automation sensor
(on by default) is what evaluates it (``defs/leaderboards/test_automation.py``)."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from dataflare_platform.definitions import defs

# The statistics tables that follow the data (daily_seller_stats is computed by its
# job's 00:30 schedule and by backfills only).
DAILY = [
    dg.AssetKey(["nexmark", table]) for table in ("daily_category_stats", "daily_person_activity")
]
NOW = datetime(2026, 3, 1, 10, tzinfo=UTC)
LATEST_DAY = "2026-02-28"


def _upstream() -> set[dg.AssetKey]:
    graph = defs.resolve_asset_graph()
    return {parent for key in DAILY for parent in graph.get(key).parent_keys}


def _evaluate(instance, minutes: int, cursor=None):
    return dg.evaluate_automation_conditions(
        defs=defs,
        instance=instance,
        asset_selection=dg.AssetSelection.assets(*DAILY),
        evaluation_time=NOW + timedelta(minutes=minutes),
        cursor=cursor,
    )


def _load(instance, keys) -> None:
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(key))


def test_loaded_tables_request_the_latest_day_and_a_reload_requests_it_again(home):
    upstream = _upstream()
    assert dg.AssetKey(["nexmark", "bids"]) in upstream
    with dg.DagsterInstance.get() as instance:
        # One upstream table never loaded: nothing to compute from.
        _load(instance, sorted(upstream)[1:])
        result = _evaluate(instance, 0)
        assert result.total_requested == 0

        _load(instance, sorted(upstream)[:1])
        result = _evaluate(instance, 1, result.cursor)
        for key in DAILY:
            assert result.get_requested_partitions(key) == {LATEST_DAY}

        # Requested once; a later tick with nothing new asks for nothing more ...
        result = _evaluate(instance, 2, result.cursor)
        assert result.total_requested == 0
        # ... and a reload of bids asks for the day again (its rows are replaced).
        _load(instance, [dg.AssetKey(["nexmark", "bids"])])
        result = _evaluate(instance, 3, result.cursor)
        for key in DAILY:
            assert result.get_requested_partitions(key) == {LATEST_DAY}
