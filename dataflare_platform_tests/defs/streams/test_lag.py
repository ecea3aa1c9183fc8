"""The stream assets' lag in Dagster, on a real instance: a run's metadata and ``lag`` check
against the topic's end (bounds from ``catalog.max_lag``), and the ``stream_lag`` sensor
evaluating the check between runs (stored as the daemon stores it)."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from dataflare_platform.component_files import DEFS_DIR
from dataflare_platform.definitions import defs as root_defs
from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.defs.streams.factory import stream_definitions
from dataflare_platform.defs.streams.lag import LAG_CHECK, LAG_SENSOR
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.log import EventLog
from dataflare_platform.streams.ranges import load_specs
from dataflare_platform_tests.processes import holding_duckdb_writer

KEY = dg.AssetKey(["streams", "hot_items"])
CHECK = dg.AssetCheckKey(KEY, LAG_CHECK)


def _pipelines(tmp_path, max_lag) -> list:
    """hot_items as shipped, with ``catalog.max_lag`` set (None: left out)."""
    folder = tmp_path / "pipelines"
    folder.mkdir()
    document = yaml.safe_load((DEFS_DIR / "streams" / "hot_items" / "defs.yaml").read_text())
    document["attributes"]["catalog"].pop("max_lag", None)
    if max_lag is not None:
        document["attributes"]["catalog"]["max_lag"] = max_lag
    (folder / "hot_items.yaml").write_text(yaml.safe_dump(document))
    return load_specs(folder)


def _defs(home, specs) -> dg.Definitions:
    resources = {
        "dataflare": ProjectHomeResource(path=str(home.root)),
        "plugins": PluginRuntimeResource(plugin_dir=str(home.root / "plugins")),
    }
    return dg.Definitions.merge(stream_definitions(specs), dg.Definitions(resources=resources))


def _run(defs, instance, until):
    asset = defs.resolve_assets_def(KEY)
    run_config = {"ops": {"streams__hot_items": {"config": {"until": until}}}}
    result = dg.materialize([asset], run_config=run_config, instance=instance)
    assert result.success  # a failed lag check is reported, it does not fail the run
    (mat,) = result.asset_materializations_for_node("streams__hot_items")
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}, checks[LAG_CHECK]


def _tick(defs, instance, home, cursor):
    """One tick of the lag sensor; its evaluations stored as the daemon stores them."""
    sensor = defs.resolve_sensor_def(LAG_SENSOR)
    resources = {"dataflare": ProjectHomeResource(path=str(home.root))}
    with dg.build_sensor_context(cursor=cursor, instance=instance, resources=resources) as ctx:
        result = sensor(ctx)
    if isinstance(result, dg.SensorResult):
        for event in result.asset_events:
            instance.report_runless_asset_event(event)
        return result, result.cursor
    assert isinstance(result, dg.SkipReason), result
    return result, cursor


def _latest(instance) -> dg.AssetCheckEvaluation:
    record = instance.get_latest_asset_check_evaluation_record(CHECK)
    return record.event.dagster_event.event_specific_data


def test_a_run_reports_lag_against_the_topic_end_and_the_check_follows_max_lag(
    home, tmp_path, small_nexmark
):
    bids = small_nexmark["bids"]
    defs = _defs(home, _pipelines(tmp_path, {"events": 1000, "severity": "error"}))
    topic = EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema)
    topic.append(bids)
    with dg.DagsterInstance.get() as instance:
        # The run's range ends at 1500 while the topic holds 3000: 1500 behind.
        meta, check = _run(defs, instance, {"bids/0": 1500})
        assert meta["events_in"] == 1500
        assert meta["lag_events"] == bids.num_rows - 1500
        assert meta["lag_seconds"] > 0
        assert meta["lag_per_partition"]["bids/0"]["events_behind"] == bids.num_rows - 1500
        assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
        assert "max_lag.events 1000" in check.description
        assert _latest(instance).passed is False

        meta, check = _run(defs, instance, {"bids/0": bids.num_rows})
        assert meta["lag_events"] == 0 and meta["lag_seconds"] == 0.0
        assert check.passed and _latest(instance).passed


def _ms(table, which) -> int:
    values = table.column("date_time").cast(pa.timestamp("ms")).cast(pa.int64())
    return getattr(pc, which)(values).as_py()


def test_the_lag_sensor_evaluates_the_check_between_runs(home, tmp_path, small_nexmark):
    bids = small_nexmark["bids"]
    first, rest = bids.slice(0, 500), bids.slice(500)
    defs = _defs(home, _pipelines(tmp_path, {"events": 5000, "seconds": 10}))
    topic = EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema)
    with dg.DagsterInstance.get() as instance:
        topic.append(first)
        # Never ran: 500 events and the backlog's event-time span behind, within bounds.
        result, cursor = _tick(defs, instance, home, None)
        (evaluation,) = result.asset_events
        assert evaluation.asset_key == KEY and evaluation.check_name == LAG_CHECK
        assert evaluation.metadata["lag_events"].value == 500
        span_s = (_ms(first, "max") - _ms(first, "min")) / 1000
        assert evaluation.metadata["lag_seconds"].value == pytest.approx(span_s)
        assert span_s <= 10 and evaluation.passed
        assert evaluation.severity == dg.AssetCheckSeverity.WARN  # the default severity
        assert _latest(instance).metadata["lag_events"].value == 500  # stored, no run

        again, cursor = _tick(defs, instance, home, cursor)  # nothing moved: nothing written
        assert isinstance(again, dg.SkipReason)

        _run(defs, instance, {"bids/0": 500})
        topic.append(rest)  # the producer moves on, no run follows
        result, cursor = _tick(defs, instance, home, cursor)
        (evaluation,) = result.asset_events
        # Within the events bound, beyond the seconds bound: newest event in the topic
        # minus the newest the pipeline processed.
        assert evaluation.metadata["lag_events"].value == rest.num_rows <= 5000
        behind_s = (_ms(bids, "max") - _ms(first, "max")) / 1000
        assert evaluation.metadata["lag_seconds"].value == pytest.approx(behind_s)
        assert behind_s > 10 and not evaluation.passed
        assert "max_lag.seconds 10" in evaluation.description
        stored = _latest(instance)
        assert stored.passed is False and stored.metadata["evaluated_by"].value == LAG_SENSOR

        _run(defs, instance, {"bids/0": bids.num_rows})
        result, cursor = _tick(defs, instance, home, cursor)
        (evaluation,) = result.asset_events
        assert evaluation.passed and evaluation.metadata["lag_events"].value == 0


def test_while_a_run_holds_the_sink_the_sensor_uses_the_recorded_checkpoint(
    home, tmp_path, small_nexmark
):
    bids = small_nexmark["bids"]
    first = bids.slice(0, 500)
    defs = _defs(home, _pipelines(tmp_path, {"events": 100}))
    topic = EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema)
    topic.append(first)
    with dg.DagsterInstance.get() as instance:
        _run(defs, instance, {"bids/0": 500})
        topic.append(bids.slice(500))
        with holding_duckdb_writer(home.root / "streams" / "hot_items.duckdb"):
            result, _ = _tick(defs, instance, home, None)
    (evaluation,) = result.asset_events
    # The offsets and processed event times the last materialization recorded.
    assert evaluation.metadata["lag_events"].value == bids.num_rows - 500
    behind_s = (_ms(bids, "max") - _ms(first, "max")) / 1000
    assert evaluation.metadata["lag_seconds"].value == pytest.approx(behind_s)
    assert not evaluation.passed


def test_without_max_lag_the_check_reports_and_passes(home, tmp_path, small_nexmark):
    bids = small_nexmark["bids"]
    defs = _defs(home, _pipelines(tmp_path, None))
    EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema).append(bids)
    with dg.DagsterInstance.get() as instance:
        meta, check = _run(defs, instance, {"bids/0": 10})
    assert meta["lag_events"] == bids.num_rows - 10 and meta["lag_seconds"] > 0
    assert check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["max_lag_events"].value == "none"


def test_the_shipped_hot_items_bounds_its_lag():
    (spec,) = [s for s in load_specs() if s.name == "hot_items"]
    assert (spec.catalog.max_lag.events, spec.catalog.max_lag.seconds) == (100_000, 60)


@pytest.mark.parametrize(
    ("max_lag", "field"),
    [
        ({"events": -1}, "catalog.max_lag.events"),
        ({"seconds": "a minute"}, "catalog.max_lag.seconds"),
        ({"event": 10}, "catalog.max_lag.event"),
        ({"severity": "fatal"}, "catalog.max_lag.severity"),
    ],
)
def test_a_bad_max_lag_is_refused_naming_the_field(tmp_path, max_lag, field):
    with pytest.raises(ConfigError) as err:
        _pipelines(tmp_path, max_lag)
    assert field in str(err.value) and "hot_items.yaml" in str(err.value)


def test_every_shipped_stream_asset_has_a_lag_check_and_the_sensor_runs():
    graph = root_defs.resolve_asset_graph()
    for spec in load_specs():
        key = dg.AssetKey(["streams", spec.name])
        assert dg.AssetCheckKey(key, LAG_CHECK) in graph.asset_check_keys
    sensor = root_defs.resolve_sensor_def(LAG_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
