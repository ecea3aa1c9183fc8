"""Pipelines written with the Python builder API: found beside the YAML ones, checked at
load with errors naming the file and field, and run like them (micro-batch ranges, the
Dagster asset, sensor and continuous job)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.defs.streams.factory import stream_definitions
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.log import EventLog
from dataflare_platform.streams.ranges import load_specs, run_range, source_ends
from dataflare_platform.streams.spec import PipelineSpec

BIG_BIDS = """
    import polars as pl

    from dataflare_platform.engine import Stream
    from dataflare_platform.streams.python_specs import stream_pipeline


    @stream_pipeline(
        name="big_bids",
        sources={"bids": {"topic": "nexmark.bids"}},
        sink={"duckdb": {"table": "big_bids"}},
        catalog={"group": "analytics", "owners": ["team:analytics"]},
    )
    def big_bids(bids: Stream) -> Stream:
        return bids.filter(pl.col("price") > LIMIT).select("auction", "price", "date_time")


    LIMIT = 5_000_000
"""


def write_builder(folder, name, text):
    (folder / "builders").mkdir(parents=True, exist_ok=True)
    path = folder / "builders" / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_builder_module_adds_a_pipeline_beside_the_yaml_ones(tmp_path):
    folder = tmp_path / "pipelines"
    write_builder(folder, "big_bids", BIG_BIDS)
    (folder / "other.yaml").write_text(
        "name: other\nsources: {bids: {topic: nexmark.bids}}\n"
        "streams: {out: {from: bids}}\noutput: out\nsink: {discard: {}}\n"
    )
    specs = {s.name: s for s in load_specs(folder)}
    assert set(specs) == {"big_bids", "other"}
    assert specs["big_bids"].catalog.group == "analytics"
    assert specs["big_bids"].builder.__name__ == "big_bids"


def test_builder_pipeline_runs_ranges_like_a_yaml_one(tmp_path, small_nexmark):
    folder = tmp_path / "pipelines"
    write_builder(folder, "big_bids", BIG_BIDS)
    (spec,) = load_specs(folder)
    bids = small_nexmark["bids"]
    log = EventLog(tmp_path / "log")
    log.create_topic("nexmark.bids", bids.schema).append(bids)
    result = run_range(spec, log, source_ends(spec, log), tmp_path / "out")
    expected = pl.from_arrow(bids).filter(pl.col("price") > 5_000_000)
    assert expected.height > 0
    counts = result.metrics.this_run()
    assert (
        counts["events_in"]
        == bids.num_rows
        == counts["events_out"] + (bids.num_rows - expected.height)
    )
    with duckdb.connect(str(tmp_path / "out" / "big_bids.duckdb"), read_only=True) as conn:
        got = pl.from_arrow(conn.sql("SELECT * FROM big_bids").to_arrow_table())
    assert got.sort(got.columns).equals(expected.select(got.columns).sort(got.columns))


def test_builder_pipeline_becomes_asset_job_sensor_and_continuous_job(home, small_nexmark):
    """The shipped Python pipeline, materialized in process over produced bids, writes
    the same sessions as its builder run directly on the same events."""
    (spec,) = [s for s in load_specs() if s.name == "bidder_sessions"]
    defs = dg.Definitions.merge(
        stream_definitions([spec]),
        dg.Definitions(
            resources={
                "dataflare": ProjectHomeResource(path=str(home.root)),
                "plugins": PluginRuntimeResource(plugin_dir=str(home.root / "plugins")),
            }
        ),
    )
    key = dg.AssetKey(["streams", "bidder_sessions"])
    asset = defs.resolve_assets_def(key)
    assert asset.specs_by_key[key].owners == ["team:streaming"]
    assert defs.resolve_job_def("bidder_sessions_job") is not None
    assert defs.resolve_job_def("bidder_sessions_continuous") is not None
    assert defs.resolve_sensor_def("bidder_sessions_sensor") is not None

    bids = small_nexmark["bids"]
    EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema).append(bids)
    result = dg.materialize([asset])
    assert result.success
    (mat,) = result.asset_materializations_for_node("streams__bidder_sessions")
    assert mat.metadata["events_in"].value == bids.num_rows
    assert mat.metadata["dead_lettered"].value == 0

    with duckdb.connect(str(home.root / "streams" / "bidder_sessions.duckdb")) as conn:
        got = pl.from_arrow(conn.sql("SELECT * FROM bidder_sessions").to_arrow_table())
    assert got.height > 0
    # Sessions, computed independently: a bidder's bids split where 10 s pass without one;
    # those the watermark has closed (the stream is open-ended) are in the table.
    frame = pl.from_arrow(bids).filter(pl.col("price") > 0).sort("bidder", "date_time")
    gap = pl.col("date_time").diff().over("bidder") > pl.duration(seconds=10)
    sessions = (
        frame.with_columns(gap.fill_null(True).cum_sum().alias("session"))
        .group_by("session")
        .agg(
            pl.col("bidder").first(),
            pl.len().alias("bids"),
            pl.col("price").sum().alias("volume"),
            pl.col("price").max().alias("top_bid"),
        )
    )
    assert got["bids"].sum() <= sessions["bids"].sum()
    want = sessions.select("bidder", "bids", "volume", "top_bid").sort(pl.all())
    joined = got.select("bidder", "bids", "volume", "top_bid").join(
        want, on=["bidder", "bids", "volume", "top_bid"], how="anti"
    )
    assert joined.height == 0  # every emitted session is a true session


def test_builder_errors_name_the_field():
    base = {"name": "p", "sources": {"bids": {"topic": "t"}}, "sink": {"discard": {}}}
    with pytest.raises(ConfigError) as err:
        PipelineSpec.load({**base, "builder": "no_such_module_xyz:fn"})
    assert err.value.fields == ["builder"] and "no_such_module_xyz" in str(err.value)

    with pytest.raises(ConfigError) as err:
        PipelineSpec.load({**base, "builder": lambda persons: persons})
    assert "takes ['persons'], which are not sources" in str(err.value)

    with pytest.raises(ConfigError) as err:
        PipelineSpec.load(
            {**base, "builder": lambda bids: bids, "streams": {"o": {"from": "bids"}}}
        )
    assert "either a builder or streams and output" in str(err.value)

    with pytest.raises(ConfigError) as err:
        PipelineSpec.load({k: v for k, v in base.items()} | {"streams": {}})
    assert "output" in str(err.value)

    spec = PipelineSpec.load({**base, "builder": lambda bids: bids.pipeline})
    from dataflare_platform.engine import TableSource
    from dataflare_platform_tests.engine.helpers import events

    with pytest.raises(ConfigError) as err:
        spec.build(sources={"bids": TableSource.single("bids", events([0]))})
    assert err.value.fields == ["builder"] and "return the output Stream" in str(err.value)


def test_a_yaml_file_can_name_a_python_builder(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "name: sessions_again\n"
        "sources: {bids: {topic: nexmark.bids}}\n"
        "builder: dataflare_platform.pipelines.builders.bidder_sessions:bidder_sessions\n"
        "sink: {discard: {}}\n"
    )
    (spec,) = load_specs(tmp_path)
    assert spec.builder.__name__ == "bidder_sessions"


def test_a_broken_builder_module_fails_loading_naming_the_file(tmp_path):
    write_builder(tmp_path, "typo", "def broken(:\n")
    with pytest.raises(ConfigError) as err:
        load_specs(tmp_path)
    assert "typo.py" in str(err.value) and "SyntaxError" in str(err.value)

    write_builder(tmp_path, "typo", BIG_BIDS.replace('"duckdb"', '"duck"'))
    with pytest.raises(ConfigError) as err:
        load_specs(tmp_path)
    assert "typo.py" in str(err.value) and "sink" in str(err.value)


def test_two_pipelines_may_not_share_a_name(tmp_path):
    write_builder(tmp_path, "big_bids", BIG_BIDS)
    (tmp_path / "dup.yaml").write_text(
        "name: big_bids\nsources: {bids: {topic: nexmark.bids}}\n"
        "streams: {out: {from: bids}}\noutput: out\nsink: {discard: {}}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_specs(tmp_path)
    assert "big_bids.py" in str(err.value) and "also declared in dup.yaml" in str(err.value)


SIDE_EFFECT_MODULE = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")

def build(bids):
    return bids
"""


def _side_effect_package(tmp_path, monkeypatch, name: str) -> Path:
    """A package ``name`` with a module ``mod`` that writes a marker file on import."""
    marker = tmp_path / f"{name}.imported"
    package = tmp_path / "syspath" / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text(SIDE_EFFECT_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path / "syspath"))
    return marker


@pytest.mark.parametrize(
    "ref",
    [
        "{pkg}.mod:build",
        "os:system",
        "subprocess:run",
        "dataflare_platform.pipelines.builders_evil:fn",  # a prefix is not a package
        "dataflare_platform.pipelines.builders.bidder_sessions:pl.read_parquet",
        "dataflare_platform.pipelines.builders.bidder_sessions:_private",
        "not a reference",
        "a:" + "b" * 5000,
    ],
)
def test_a_builder_outside_the_allowed_packages_is_refused_without_importing_it(
    tmp_path, monkeypatch, ref
):
    monkeypatch.delenv("DATAFLARE_PIPELINE_BUILDERS", raising=False)
    pkg = f"sidefx_{abs(hash(ref)) % 10**8}"
    marker = _side_effect_package(tmp_path, monkeypatch, pkg)
    base = {"name": "p", "sources": {"bids": {"topic": "t"}}, "sink": {"discard": {}}}
    with pytest.raises(ConfigError) as err:
        PipelineSpec.load({**base, "builder": ref.format(pkg=pkg)})
    assert err.value.fields == ["builder"]
    assert len(str(err.value).splitlines()) == 2 and len(str(err.value)) < 400
    assert not marker.exists() and f"{pkg}.mod" not in sys.modules


def test_the_deployment_allows_more_builder_packages_by_environment(tmp_path, monkeypatch):
    marker = _side_effect_package(tmp_path, monkeypatch, "sidefx_allowed")
    base = {"name": "p", "sources": {"bids": {"topic": "t"}}, "sink": {"discard": {}}}
    monkeypatch.setenv("DATAFLARE_PIPELINE_BUILDERS", " other.pkg , sidefx_allowed")
    spec = PipelineSpec.load({**base, "builder": "sidefx_allowed.mod:build"})
    assert spec.builder.__name__ == "build" and marker.exists()

    monkeypatch.setenv("DATAFLARE_PIPELINE_BUILDERS", "ok.pkg,../evil")
    with pytest.raises(ConfigError) as err:
        PipelineSpec.load({**base, "builder": "sidefx_allowed.mod:build"})
    assert err.value.fields == ["DATAFLARE_PIPELINE_BUILDERS"]


def test_pipeline_validate_refuses_a_builder_module_naming_the_field(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "sidefx_cli.py").write_text(SIDE_EFFECT_MODULE.format(marker=str(marker)))
    (tmp_path / "p.yaml").write_text(
        "name: p\nsources: {bids: {topic: t}}\nbuilder: sidefx_cli:build\nsink: {discard: {}}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DATAFLARE_PIPELINE_BUILDERS"}
    env["PYTHONPATH"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "dataflare_platform.cli", "pipeline", "validate", "p.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr  # the exit code of a refused config
    assert "builder: module 'sidefx_cli' is not in a builder package" in done.stderr
    assert "Traceback" not in done.stderr and not marker.exists()
