"""Declarative pipelines as Dagster assets, jobs and sensors (in process: the sensor is
evaluated, then the run it requests is materialized with its run config)."""

import json
import shutil

import dagster as dg
import duckdb
import polars as pl
import pytest

from dataflare_platform.component_files import DEFS_DIR
from dataflare_platform.definitions import defs as root_defs
from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.defs.streams.factory import stream_definitions
from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, TableSource
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.log import EventLog
from dataflare_platform.queries.nexmark import BUILDERS, NexmarkSources
from dataflare_platform.streams.ranges import load_specs


@pytest.fixture
def pipelines_dir(tmp_path):
    folder = tmp_path / "pipelines"
    folder.mkdir()
    shutil.copy(DEFS_DIR / "streams" / "hot_items" / "defs.yaml", folder / "hot_items.yaml")
    return folder


def _resources(home):
    return {
        "dataflare": ProjectHomeResource(path=str(home.root)),
        "plugins": PluginRuntimeResource(plugin_dir=str(home.root / "plugins")),
    }


def _tick(defs, home, cursor):
    sensor = defs.resolve_sensor_def("hot_items_sensor")
    with dg.build_sensor_context(
        cursor=cursor, resources=_resources(home), instance=dg.DagsterInstance.ephemeral()
    ) as context:
        result = sensor(context)
        return result, context.cursor


def _materialize(defs, run_config):
    """The run the sensor asked for (the asset comes with the definitions' resources)."""
    asset = defs.resolve_assets_def(dg.AssetKey(["streams", "hot_items"]))
    result = dg.materialize([asset], run_config=run_config)
    assert result.success
    (mat,) = result.asset_materializations_for_node("streams__hot_items")
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(checks) == {"dead_letter_rate", "lag"}
    assert checks["dead_letter_rate"].passed and checks["lag"].passed  # no max_lag: passes
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def test_sensor_requests_each_new_range_once_and_runs_process_it_once(
    home, pipelines_dir, small_nexmark
):
    defs = dg.Definitions.merge(
        stream_definitions(load_specs(pipelines_dir)), dg.Definitions(resources=_resources(home))
    )
    bids = small_nexmark["bids"]
    first, rest = bids.slice(0, 1500), bids.slice(1500)

    skipped, _ = _tick(defs, home, None)
    assert isinstance(skipped, dg.SkipReason)  # no topic yet

    topic = EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema)
    topic.append(first)
    request, cursor = _tick(defs, home, None)
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == "hot_items:bids/0=1500"
    meta = _materialize(defs, request.run_config)
    assert meta["events_in"] == 1500 and meta["dead_lettered"] == 0 and meta["lag_events"] == 0

    again, cursor = _tick(defs, home, cursor)  # nothing new: no run
    assert isinstance(again, dg.SkipReason)
    # The same range requested again (a retried or duplicated run) reads nothing.
    assert _materialize(defs, request.run_config)["events_in"] == 0

    topic.append(rest)
    request, cursor = _tick(defs, home, cursor)
    assert request.run_key == f"hot_items:bids/0={bids.num_rows}"
    meta = _materialize(defs, request.run_config)
    assert meta["events_in"] == rest.num_rows
    assert meta["events_in_total"] == bids.num_rows
    columns = [c.name for c in meta["dagster/column_schema"].columns]
    assert columns == ["window_start", "window_end", "auction", "num"]
    assert json.loads(cursor) == {"bids/0": bids.num_rows}

    with duckdb.connect(str(home.root / "streams" / "hot_items.duckdb")) as conn:
        got = pl.from_arrow(conn.sql("SELECT * FROM hot_items").to_arrow_table())
    # Same as the q5 builder over the same bids, for the windows the watermark closed
    # (the stream is open-ended: the last windows stay open).
    whole = CollectSink()
    source = TableSource.single("bids", bids.select(["auction", "date_time"]))
    Runner(BUILDERS["q5"](NexmarkSources(bids=source), whole), RunnerConfig()).run()
    expected = whole.result().filter(pl.col("window_start") <= got["window_start"].max())
    assert got.height > 0 and got.unique().height == got.height
    assert got.sort(got.columns).equals(expected.select(got.columns).sort(got.columns))


def test_sensor_requests_nothing_the_checkpoint_already_covers(home, pipelines_dir, small_nexmark):
    """On a real instance: once a run has processed the topic (the demo, a launch from
    the UI), a sensor with no cursor yet (the first UI start) requests nothing, so no run
    processes 0 events and overwrites the asset's latest metadata with zeros; events
    appended later are requested, and the run reads only them."""
    defs = dg.Definitions.merge(
        stream_definitions(load_specs(pipelines_dir)), dg.Definitions(resources=_resources(home))
    )
    bids = small_nexmark["bids"]
    topic = EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema)
    topic.append(bids.slice(0, 2000))
    sensor = defs.resolve_sensor_def("hot_items_sensor")
    job = defs.resolve_job_def("hot_items_job")

    with dg.instance_for_test() as instance:

        def tick(cursor: str | None):
            with dg.build_sensor_context(
                cursor=cursor, resources=_resources(home), instance=instance
            ) as context:
                return sensor(context), context.cursor

        def run(run_config: dict | None = None) -> dict:
            result = job.execute_in_process(run_config=run_config, instance=instance)
            assert result.success
            (mat,) = result.asset_materializations_for_node("streams__hot_items")
            return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}

        assert run()["events_in"] == 2000  # e.g. the demo's run, outside the sensor
        for cursor in (None, json.dumps({"bids/0": 1000})):  # none yet, or an older one
            skipped, kept = tick(cursor)
            assert isinstance(skipped, dg.SkipReason), skipped
            assert kept == cursor
        assert len(instance.get_runs()) == 1

        topic.append(bids.slice(2000))
        request, cursor = tick(None)
        assert isinstance(request, dg.RunRequest)
        assert request.run_key == f"hot_items:bids/0={bids.num_rows}"
        meta = run(request.run_config)
        assert meta["events_in"] == bids.num_rows - 2000
        assert meta["offsets"] == {"bids/0": bids.num_rows}
        assert isinstance(tick(None)[0], dg.SkipReason)
        assert isinstance(tick(cursor)[0], dg.SkipReason)


def test_stream_jobs_run_in_process_and_the_warehouse_jobs_do_not():
    """A stream job materializes one asset (then its checks, e.g. a governance file's
    blocking schema contract, one after the other in the same process): the multiprocess
    executor would load the code location again for every step (seconds each) for
    nothing. Jobs with several DuckDB writers keep the code location's default (one step
    per file at a time, defs/pools.py)."""
    for spec in load_specs():
        job = root_defs.resolve_job_def(f"{spec.name}_job")
        assert job.executor_def is dg.in_process_executor, spec.name
        assert job.asset_layer.executable_asset_keys == {dg.AssetKey(["streams", spec.name])}
    ingest = root_defs.resolve_job_def("nexmark_ingest_job")
    assert ingest.executor_def.name == "multiprocess_one_writer_per_duckdb_file"


def test_shipped_pipelines_are_in_the_code_location():
    keys = {k.to_user_string() for k in root_defs.resolve_asset_graph().get_all_asset_keys()}
    for spec in load_specs():
        assert f"streams/{spec.name}" in keys
        assert root_defs.resolve_sensor_def(f"{spec.name}_sensor") is not None
        assert root_defs.resolve_job_def(f"{spec.name}_job") is not None
    assert "topics/nexmark.bids" in keys


def test_a_bad_pipeline_file_fails_loading_naming_file_and_field(pipelines_dir):
    (pipelines_dir / "broken.yaml").write_text(
        (pipelines_dir / "hot_items.yaml").read_text().replace("slide: 2s", "slide: soon")
    )
    with pytest.raises(ConfigError) as err:
        load_specs(pipelines_dir)
    assert "broken.yaml" in str(err.value) and "window.sliding.slide" in str(err.value)
    assert err.value.fields == ["streams.hot.steps.1"]


def test_sensor_interval_can_be_overridden_without_editing_the_files(monkeypatch):
    from dataflare_platform.defs.streams.intervals import sensor_interval_override

    def intervals(defs):
        return {s.name: s.minimum_interval_seconds for s in defs.sensors}

    specs = load_specs()
    # catalog.sensor_interval: 30s
    assert intervals(stream_definitions(specs))["hot_items_sensor"] == 30
    fast = intervals(stream_definitions(specs, sensor_interval_s=2))
    assert fast["hot_items_sensor"] == 2

    monkeypatch.delenv("DATAFLARE_SENSOR_INTERVAL", raising=False)
    assert sensor_interval_override() is None
    monkeypatch.setenv("DATAFLARE_SENSOR_INTERVAL", "3s")
    assert sensor_interval_override() == 3
    monkeypatch.setenv("DATAFLARE_SENSOR_INTERVAL", "soon")
    with pytest.raises(ValueError, match="DATAFLARE_SENSOR_INTERVAL='soon'"):
        sensor_interval_override()


def test_a_plugin_pipeline_run_records_which_modules_it_loaded(home, small_nexmark):
    """The audit trail reads these digests from the materialization (plugin_loaded)."""
    (spec,) = [s for s in load_specs() if s.name == "masked_persons"]
    defs = dg.Definitions.merge(
        stream_definitions([spec]), dg.Definitions(resources=_resources(home))
    )
    persons = small_nexmark["persons"]
    log = EventLog(home.event_log_dir)
    log.create_topic("nexmark.persons", persons.schema, partitions=2, key="id").append(persons)
    asset = defs.resolve_assets_def(dg.AssetKey(["streams", "masked_persons"]))
    result = dg.materialize([asset])
    (mat,) = result.asset_materializations_for_node("streams__masked_persons")
    plugins = mat.metadata["plugins"].value
    assert set(plugins) == {"pii_mask@mask_email", "pii_mask@mask_card"}
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in plugins.values())
    assert len(set(plugins.values())) == 1  # one module, two steps
    # The sample was pinned to what its shipped source compiles to, in the home's lock.
    from dataflare_platform.plugins.lock import read_lock

    pinned = read_lock(home.root / "plugins.lock").plugins["pii_mask"].sha256
    assert set(plugins.values()) == {pinned}


def test_a_swapped_module_fails_the_pipeline_run_and_is_audited(audited_home, small_nexmark):
    """After the pipeline ran with the reviewed module, someone replaces the module in the
    plugin folder: the next run is refused naming the step, and audited."""
    home = audited_home
    from dataflare_platform.compliance.audit import AuditLog
    from dataflare_platform.plugins.build import SAMPLES_DIR, build_plugin

    (spec,) = [s for s in load_specs() if s.name == "masked_persons"]
    defs = dg.Definitions.merge(
        stream_definitions([spec]), dg.Definitions(resources=_resources(home))
    )
    persons = small_nexmark["persons"]
    EventLog(home.event_log_dir).create_topic("nexmark.persons", persons.schema).append(persons)
    asset = defs.resolve_assets_def(dg.AssetKey(["streams", "masked_persons"]))
    assert dg.materialize([asset]).success
    other = build_plugin(SAMPLES_DIR / "currency", home.root / "scratch")
    shutil.copy(other, home.root / "plugins" / "pii_mask.wasm")
    with pytest.raises(ConfigError) as err:
        dg.materialize([asset])
    assert err.value.fields == [
        "streams.masked.steps[0].plugin.name",
        "streams.masked.steps[1].plugin.name",
    ]
    with AuditLog(f"sqlite:///{home.root / 'audit.db'}") as log:
        refused = [e for e in log.tail(50) if e.action == "plugin_refused"]
    assert {e.subject for e in refused} == {"pii_mask"}
    assert all(e.payload()["reason"] == "digest_mismatch" for e in refused)
