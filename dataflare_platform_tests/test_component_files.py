"""Component instance files read without Dagster: the loaders of the data plane find the
shipped pipelines and governed datasets where dg finds them, and accept a component
instance wherever a spec file is given."""

from pathlib import Path

import pytest

from dataflare_platform.compliance.spec import load_dataset_spec, load_dataset_specs
from dataflare_platform.component_files import (
    DEFS_DIR,
    GOVERNED_DATASET,
    STREAM_PIPELINE,
    component_name,
    find_instances,
)
from dataflare_platform.errors import ConfigError
from dataflare_platform.streams.ranges import load_specs
from dataflare_platform.streams.spec import PipelineSpec

PIPELINE = """\
type: dataflare_platform.components.StreamPipelineComponent
attributes:
  name: big_bids
  sources: {bids: {kind: topic, topic: nexmark.bids}}
  streams: {big: {from: bids, steps: [{filter: "price > 1000000"}]}}
  output: big
  sink: {kind: duckdb, path: out.duckdb, table: big_bids}
"""
DATASET = """\
type: dataflare_platform.components.GovernedDatasetComponent
attributes:
  asset: streams/big_bids
  freshness: {max_lag: 2h}
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_shipped_instances_are_found_by_type():
    pipelines = {p.parent.name: a["name"] for p, a in find_instances(STREAM_PIPELINE)}
    shipped = ("highest_bid_eur", "hot_items", "masked_persons", "sealed_persons")
    assert pipelines == {n: n for n in shipped}
    datasets = {a["asset"] for _, a in find_instances(GOVERNED_DATASET)}
    assert {"nexmark/bids", "streams/hot_items"} <= datasets
    assert all(DEFS_DIR in p.parents for p, _ in find_instances(GOVERNED_DATASET))


def test_the_shipped_pipelines_are_the_instances_and_the_builders():
    names = {s.name for s in load_specs()}
    assert names == {
        "highest_bid_eur",
        "hot_items",
        "masked_persons",
        "sealed_persons",
        "bidder_sessions",
    }
    assert {s.asset for s in load_dataset_specs()} == {
        a["asset"] for _, a in find_instances(GOVERNED_DATASET)
    }


def test_a_file_may_hold_several_instances_and_other_components(tmp_path: Path):
    _write(
        tmp_path / "a" / "defs.yaml",
        PIPELINE + "---\n" + DATASET + "---\ntype: dagster.DefsFolderComponent\nattributes: {}\n",
    )
    assert [a["name"] for _, a in find_instances(STREAM_PIPELINE, tmp_path)] == ["big_bids"]
    assert [a["asset"] for _, a in find_instances(GOVERNED_DATASET, tmp_path)] == [
        "streams/big_bids"
    ]
    assert component_name("dataflare_platform.components.stream_pipeline.X") == "X"
    assert component_name("dagster.DefsFolderComponent") is None


def test_an_unreadable_instance_file_is_refused_naming_it(tmp_path: Path):
    _write(tmp_path / "bad" / "defs.yaml", "type: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad/defs\.yaml"):
        find_instances(STREAM_PIPELINE, tmp_path)


def test_a_component_instance_and_a_bare_spec_load_to_the_same_spec(tmp_path: Path):
    wrapped = _write(tmp_path / "big_bids" / "defs.yaml", PIPELINE)
    bare_text = "\n".join(line[2:] for line in PIPELINE.splitlines()[2:]) + "\n"
    bare = _write(tmp_path / "big_bids" / "bare.yaml", bare_text)
    spec = PipelineSpec.from_yaml(wrapped)
    assert spec == PipelineSpec.from_yaml(bare)
    assert spec.sink.path == tmp_path / "big_bids" / "out.duckdb"
    assert [s.name for s in load_specs(tmp_path)] == ["big_bids"]

    dataset = _write(tmp_path / "gov" / "big_bids" / "defs.yaml", DATASET)
    assert load_dataset_spec(dataset).asset == "streams/big_bids"
    assert [s.asset for s in load_dataset_specs(tmp_path / "gov")] == ["streams/big_bids"]


def test_a_bad_field_in_an_instance_is_named(tmp_path: Path):
    _write(tmp_path / "p" / "defs.yaml", PIPELINE.replace("price >", "price >>"))
    with pytest.raises(ConfigError) as err:
        load_specs(tmp_path)
    assert "p/defs.yaml" in str(err.value) and err.value.fields[0].startswith("streams.big")
