"""The Nexmark queries the YAML pipeline format can express (queries/nexmark/yaml/) give
the same rows as their builders on the public API."""

from pathlib import Path

import polars as pl
import pytest
import yaml

from dataflare_platform.connectors.files import write_side_table
from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, TableSource
from dataflare_platform.queries.nexmark import BUILDERS, COLUMNS, NexmarkSources
from dataflare_platform.queries.nexmark.streams import side_table
from dataflare_platform.streams.spec import PipelineSpec

YAML_DIR = Path(__file__).parents[2] / "dataflare_platform" / "queries" / "nexmark" / "yaml"


def _rows(sink: CollectSink) -> pl.DataFrame:
    out = sink.result()
    return out.sort(out.columns)


@pytest.mark.parametrize("query", ["q11", "q13", "q14", "q21", "q22"])
def test_yaml_pipeline_gives_the_builders_rows(small_nexmark, tmp_path, query):
    data = yaml.safe_load((YAML_DIR / f"{query}.yaml").read_text())
    if query == "q13":  # the side table the builder generates, as the YAML's CSV
        enrich = data["streams"]["joined"]["steps"][1]["enrich"]
        enrich["path"] = str(write_side_table(side_table(), tmp_path / "side.csv"))
    spec = PipelineSpec.load(data)
    bids = small_nexmark["bids"].select(COLUMNS[query]["bids"])
    config = RunnerConfig(batch_rows=37)
    from_yaml, from_builder = CollectSink(), CollectSink()
    Runner(
        spec.build(sink=from_yaml, sources={"bids": TableSource.single("bids", bids)}), config
    ).run()
    sources = NexmarkSources(bids=TableSource.single("bids", bids))
    Runner(BUILDERS[query](sources, from_builder), config).run()
    expected = _rows(from_builder)
    got = _rows(from_yaml).select(expected.columns)
    assert expected.height > 0
    got = got.cast(expected.schema)
    for column in expected.columns:
        assert got[column].equals(expected[column]), column
