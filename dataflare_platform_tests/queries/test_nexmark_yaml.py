"""The Nexmark queries the YAML pipeline format can express (queries/nexmark/yaml/) give
the same rows as their builders on the public API: q10 the same dataset (folders and
rows), q12 the same rows under one processing-time clock the test controls."""

from pathlib import Path

import polars as pl
import pytest
import yaml

from dataflare_platform.connectors.files import write_side_table
from dataflare_platform.datagen import NexmarkConfig
from dataflare_platform.engine import CollectSink, Pipeline, Runner, RunnerConfig, TableSource
from dataflare_platform.engine.operators import ProcessingTimeAggregate
from dataflare_platform.errors import ConfigError
from dataflare_platform.queries.nexmark import BUILDERS, COLUMNS, NexmarkSources
from dataflare_platform.queries.nexmark.streams import q10, q10_dataset, q12, side_table
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform_tests.nexmark_data import nexmark_tables

YAML_DIR = Path(__file__).parents[2] / "dataflare_platform" / "queries" / "nexmark" / "yaml"


def _load(query: str) -> dict:
    return yaml.safe_load((YAML_DIR / f"{query}.yaml").read_text())


def _assert_same_rows(got: pl.DataFrame, expected: pl.DataFrame) -> None:
    assert expected.height > 0
    got = got.select(expected.columns).cast(expected.schema)
    got, expected = got.sort(got.columns), expected.sort(expected.columns)
    for column in expected.columns:
        assert got[column].equals(expected[column]), column


@pytest.mark.parametrize("query", ["q11", "q13", "q14", "q21", "q22"])
def test_yaml_pipeline_gives_the_builders_rows(small_nexmark, tmp_path, query):
    data = _load(query)
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
    _assert_same_rows(from_yaml.result(), from_builder.result())


def test_q10_yaml_writes_the_builders_dataset(tmp_path):
    # 0.5 events/s (as the builder's own q10 test): 3000 events span 100 minutes, so two
    # hour folders; small_nexmark's 30 s would all land in one.
    tables = nexmark_tables(NexmarkConfig(events=3_000, events_per_second=0.5, seed=3))
    bids = tables["bids"].select(COLUMNS["q10"]["bids"])
    config = RunnerConfig(batch_rows=37, checkpoint_every=3)
    data = _load("q10")
    data["sink"]["root"] = str(tmp_path / "yaml")
    spec = PipelineSpec.load(data)
    Runner(spec.build(sources={"bids": TableSource.single("bids", bids)}), config).run()
    sources = NexmarkSources(bids=TableSource.single("bids", bids))
    Runner(q10(sources, q10_dataset(tmp_path / "builder")), config).run()

    def folders(root: Path) -> list[str]:
        return sorted(p.relative_to(root).as_posix() for p in root.glob("dt=*/hh=*"))

    assert folders(tmp_path / "yaml") == folders(tmp_path / "builder")
    assert [f.split("/")[1] for f in folders(tmp_path / "builder")] == ["hh=00", "hh=01"]
    for folder in folders(tmp_path / "builder"):
        _assert_same_rows(
            pl.read_parquet(tmp_path / "yaml" / folder / "*.parquet"),
            pl.read_parquet(tmp_path / "builder" / folder / "*.parquet"),
        )


class TickingClock:
    """Processing time the test controls (epoch ms): each reading is ``step_ms`` after
    the last, so one run passes through several windows, and two runs of the same
    operator over the same batches read the same times."""

    def __init__(self, start_ms: int, step_ms: int) -> None:
        self.now, self.step_ms = start_ms, step_ms

    def __call__(self) -> int:
        self.now += self.step_ms
        return self.now


def _set_clock(pipeline: Pipeline, clock: TickingClock) -> None:
    """The YAML has no clock setting (production is the wall clock): the test sets it on
    the built operator, as the builder is handed one."""
    (op,) = (
        n.operator
        for n in pipeline.nodes.values()
        if isinstance(n.operator, ProcessingTimeAggregate)
    )
    op.clock = clock


def test_q12_yaml_gives_the_builders_rows_under_the_same_clock(small_nexmark):
    bids = small_nexmark["bids"].select(COLUMNS["q12"]["bids"])
    config = RunnerConfig(batch_rows=37)
    start = 1_700_000_000_000  # a multiple of 10 s
    from_yaml, from_builder = CollectSink(), CollectSink()
    pipeline = PipelineSpec.load(_load("q12")).build(
        sink=from_yaml, sources={"bids": TableSource.single("bids", bids)}
    )
    _set_clock(pipeline, TickingClock(start, 1_000))
    Runner(pipeline, config).run()
    sources = NexmarkSources(bids=TableSource.single("bids", bids))
    Runner(q12(sources, from_builder, TickingClock(start, 1_000)), config).run()
    expected = from_builder.result()
    assert expected["window_start"].n_unique() > 1  # the clock crossed windows
    assert expected["bid_count"].sum() == bids.num_rows
    _assert_same_rows(from_yaml.result(), expected)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"lateness": "5s"}, "window.lateness"),
        ({"top": {"by": "bid_count"}}, "window.top"),
        ({"top_rows": {"by": "bidder"}}, "window.top_rows"),
        ({"tumbling": "10s"}, "window: give exactly one of"),
    ],
)
def test_processing_tumbling_refuses_event_time_settings_naming_the_field(extra, field):
    data = _load("q12")
    data["streams"]["counts"]["steps"][1]["window"].update(extra)
    with pytest.raises(ConfigError, match=f"streams.counts.steps.1: {field}"):
        PipelineSpec.load(data)
