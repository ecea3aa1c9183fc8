"""The hourly leaderboard's ``on_cron`` condition, evaluated on the real definitions
against a real instance: after the hour's cron tick, the hour that just ended is
requested once the ``nexmark.bids`` topic has been observed with new data, and not
before (an observation that finds nothing new does not count)."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from dataflare_platform.definitions import defs
from dataflare_platform.defs.automation import AUTOMATION_SENSOR
from dataflare_platform.defs.leaderboards.assets import CRON_ENV_VAR, leaderboard_cron
from dataflare_platform.defs.streams.topics import topic_key
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.log import EventLog
from dataflare_platform_tests.defs.topic_observations import tick_topic_observations

BOARD = dg.AssetKey(["leaderboards", "hourly_hot_auctions"])
BIDS = topic_key("nexmark.bids")
TICK = datetime(2026, 3, 1, 10, tzinfo=UTC)  # a tick of the hourly cron
ENDED_HOUR = "2026-03-01-09:00"


def _evaluate(instance, minutes: int, cursor=None):
    return dg.evaluate_automation_conditions(
        defs=defs,
        instance=instance,
        asset_selection=dg.AssetSelection.assets(BOARD),
        evaluation_time=TICK + timedelta(minutes=minutes),
        cursor=cursor,
    )


def _past_the_tick(instance):
    """Evaluations before and after the tick, with the topic unchanged: nothing yet."""
    result = _evaluate(instance, -1)
    assert result.total_requested == 0
    result = _evaluate(instance, 1, result.cursor)
    assert result.total_requested == 0
    return result.cursor


def test_an_observed_update_after_the_tick_requests_the_hour_that_ended(home):
    with dg.DagsterInstance.get() as instance:
        cursor = _past_the_tick(instance)
        instance.report_runless_asset_event(
            dg.AssetObservation(BIDS, tags={"dagster/data_version": "ends-1"})
        )
        result = _evaluate(instance, 2, cursor)
        assert result.get_requested_partitions(BOARD) == {ENDED_HOUR}
        # Requested: handled until the next tick, even if the topic keeps moving.
        instance.report_runless_asset_event(
            dg.AssetObservation(BIDS, tags={"dagster/data_version": "ends-2"})
        )
        assert _evaluate(instance, 3, result.cursor).total_requested == 0


def test_without_an_observation_nothing_is_requested(home):
    with dg.DagsterInstance.get() as instance:
        cursor = _past_the_tick(instance)
        for minutes in (2, 3, 30):
            result = _evaluate(instance, minutes, cursor)
            assert result.total_requested == 0
            cursor = result.cursor


def test_appends_seen_by_the_sensor_request_the_leaderboard(home, small_nexmark):
    bids = small_nexmark["bids"]
    topic = EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema)
    topic.append(bids.slice(0, 1000))
    with dg.DagsterInstance.get() as instance:
        _, sensor_cursor = tick_topic_observations(defs, instance, home, None)
        cursor = _past_the_tick(instance)  # observed before the tick: does not count

        # The topic is observed again but nothing was appended: no observation, no run.
        skipped, sensor_cursor = tick_topic_observations(defs, instance, home, sensor_cursor)
        assert isinstance(skipped, dg.SkipReason)
        result = _evaluate(instance, 2, cursor)
        assert result.total_requested == 0

        topic.append(bids.slice(1000))
        tick_topic_observations(defs, instance, home, sensor_cursor)
        result = _evaluate(instance, 3, result.cursor)
        assert result.get_requested_partitions(BOARD) == {ENDED_HOUR}


def test_a_run_observing_an_unchanged_topic_does_not_count(home, small_nexmark):
    """Observing through the asset (a run, e.g. from the UI) reports even when nothing
    changed; Dagster compares data versions, so the leaderboard waits."""
    bids = small_nexmark["bids"]
    EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema).append(bids)
    observe = defs.resolve_assets_def(BIDS)
    with dg.DagsterInstance.get() as instance:
        assert dg.materialize([observe], instance=instance, selection=[BIDS]).success
        cursor = _past_the_tick(instance)
        assert dg.materialize([observe], instance=instance, selection=[BIDS]).success
        assert _evaluate(instance, 2, cursor).total_requested == 0


def test_one_automation_sensor_runs_by_default_over_every_condition():
    """Dagster's implicit default automation sensor starts stopped; ours does not, and it
    covers every asset with a condition (no condition left under a stopped sensor)."""
    sensor = defs.resolve_sensor_def(AUTOMATION_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    graph = defs.resolve_asset_graph()
    with_condition = {
        key for key in graph.get_all_asset_keys() if graph.get(key).automation_condition
    }
    assert BOARD in with_condition and len(with_condition) > 1
    assert with_condition <= sensor.asset_selection.resolve(graph)
    assert not [
        s.name
        for s in defs.sensors or []
        if isinstance(s, dg.AutomationConditionSensorDefinition) and s.name != AUTOMATION_SENSOR
    ]


def test_the_cron_can_be_overridden_and_a_bad_one_is_refused(monkeypatch):
    monkeypatch.delenv(CRON_ENV_VAR, raising=False)
    assert leaderboard_cron() == "0 * * * *"
    monkeypatch.setenv(CRON_ENV_VAR, "* * * * *")
    assert leaderboard_cron() == "* * * * *"
    monkeypatch.setenv(CRON_ENV_VAR, "every hour")
    with pytest.raises(ConfigError) as err:
        leaderboard_cron()
    assert err.value.fields == [CRON_ENV_VAR]
