"""q15's distinct bidders per day, approximately: the hll_distinct WASM plugin (built from
its C source) as a windowed aggregate (``plugin_agg``: one sketch per day window, merged
by the plugin for sliding windows). Each day's estimate is exactly the HyperLogLog of
that day's bidders (the numpy model of the C sample), for any batch size, after a stop
and a restore from the checkpoint, and after a rolled-back batch; and within the
plugin's documented error of the exact ``count_distinct`` of the q15 pipeline."""

from __future__ import annotations

import datetime
import shutil

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataflare_platform.datagen import NexmarkConfig
from dataflare_platform.engine import (
    CollectSink,
    Runner,
    RunnerConfig,
    TableSource,
    sliding,
)
from dataflare_platform.engine.operators.plugin_windows import WindowPluginAggregate
from dataflare_platform.engine.operators.windows import Tumbling
from dataflare_platform.engine.pipeline import Pipeline
from dataflare_platform.errors import ConfigError
from dataflare_platform.plugins import PluginError, load_plugin
from dataflare_platform.plugins.registry import PluginRegistry, RegistryConfig
from dataflare_platform.plugins.specs import build_with_plugins
from dataflare_platform.queries.nexmark import BUILDERS, NexmarkSources
from dataflare_platform.queries.nexmark.keyed import q15_approx_bidders
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform.streams.state_reset import resolve_step
from dataflare_platform_tests.nexmark_data import nexmark_tables
from dataflare_platform_tests.plugins.test_aggregate import estimate, registers

# The manifest's "~1.6% error" is HyperLogLog's standard error with 4096 registers
# (1.04 / sqrt(4096) = 1.625 %); three of them bound an estimate but for 0.3 % of runs.
STANDARD_ERROR = 1.04 / 4096**0.5
DAY_MS = 86_400_000


@pytest.fixture
def hll(built, cache_dir):
    return load_plugin(built["hll_distinct"], cache_dir=cache_dir, columns={"value": "bidder"})


def _bids(events: int, days: float, seed: int) -> pa.Table:
    """Generated bids spread over about ``days`` days (the generator's own disorder)."""
    config = NexmarkConfig(events=events, events_per_second=events / (days * 86_400), seed=seed)
    return nexmark_tables(config)["bids"].select(["auction", "bidder", "price", "date_time"])


def _model(bids: pa.Table) -> pl.DataFrame:
    """Per day, the HyperLogLog estimate of its bidders as the C sample computes it."""
    days = pl.from_arrow(bids).with_columns(pl.col("date_time").dt.date().alias("day"))
    return pl.DataFrame(
        [
            {"day": day, "total_bidders": estimate(registers(rows["bidder"]))}
            for (day,), rows in sorted(days.partition_by("day", as_dict=True).items())
        ],
        schema={"day": pl.Date, "total_bidders": pl.Int64},
    )


def _run(bids: pa.Table, hll, config: RunnerConfig, sink: CollectSink | None = None):
    sink = sink or CollectSink()
    sources = NexmarkSources(bids=TableSource.single("bids", bids))
    result = Runner(q15_approx_bidders(sources, sink, hll), config).run()
    return sink, result


@pytest.mark.parametrize("batch_rows", [1, 37, 100_000])
def test_each_day_is_the_hyperloglog_of_its_bidders(hll, batch_rows):
    bids = _bids(3_000 if batch_rows == 1 else 30_000, days=3.5, seed=4)
    sink, result = _run(bids, hll, RunnerConfig(batch_rows=batch_rows))
    assert result.finished
    got = sink.result().sort("day")
    assert got.height >= 3  # several days, each closed once
    assert sink.side().height == 0  # the generator's disorder is within the watermark delay
    assert got.equals(_model(bids))


def test_a_stopped_run_resumes_from_its_checkpoint_to_the_same_days(hll, built, cache_dir):
    bids = _bids(20_000, days=3.5, seed=5)
    config = RunnerConfig(batch_rows=500, checkpoint_every=3)
    whole, _ = _run(bids, hll, config)

    sink = CollectSink()
    sources = NexmarkSources(bids=TableSource.single("bids", bids))
    until = {"bids/0": bids.num_rows // 2}
    first = Runner(q15_approx_bidders(sources, sink, hll), config).run(until=until)
    assert not first.finished
    # A fresh plugin instance: the sketches come back from the checkpoint alone.
    fresh = load_plugin(built["hll_distinct"], cache_dir=cache_dir, columns={"value": "bidder"})
    sources = NexmarkSources(bids=TableSource.single("bids", bids))
    second = Runner(q15_approx_bidders(sources, sink, fresh), config).run()
    assert second.finished
    assert sink.result().sort("day").equals(whole.result().sort("day"))


def test_a_sliding_window_merges_its_days_sketches_exactly(hll):
    """Two-day windows sliding by a day: the plugin's merge of two day sketches is the
    sketch of both days' bidders (registers merge by maximum)."""
    bids = _bids(30_000, days=3.5, seed=6)
    sink = CollectSink()
    pipeline = (
        Pipeline("hll-sliding", out_of_orderness_ms=4_000)
        .source(TableSource.single("bids", bids))
        .select("bidder", "date_time")
        .key_by()
        .window(sliding("2d", "1d"))
        .plugin_agg(hll)
        .sink(sink)
    )
    Runner(pipeline, RunnerConfig(batch_rows=1_000)).run()
    got = sink.result().sort("window_start")
    assert got.height >= 4
    assert sink.side().height == 0
    frame = pl.from_arrow(bids)
    for row in got.iter_rows(named=True):
        inside = frame.filter(
            (pl.col("date_time") >= row["window_start"]) & (pl.col("date_time") < row["window_end"])
        )
        assert row["window_end"] - row["window_start"] == datetime.timedelta(days=2)
        assert row["approx_distinct"] == estimate(registers(inside["bidder"]))


def test_keys_get_a_sketch_each_and_a_rolled_back_batch_counts_nothing(hll):
    op = WindowPluginAggregate(hll, Tumbling(DAY_MS), ["channel"])
    op.bind("date_time")
    day = datetime.datetime(2026, 12, 1)
    batch = pl.DataFrame(
        {
            "bidder": [1, 2, 3, 1, 7],
            "channel": ["web", "web", "app", "app", "web"],
            "date_time": pl.Series([day] * 5, dtype=pl.Datetime("ms")),
        }
    )
    op.process(batch)
    saved = op.savepoint()
    op.process(batch.with_columns(pl.col("bidder") + 100))  # a batch that is then rolled back
    op.rollback(saved)
    end = day.replace(tzinfo=datetime.UTC) + datetime.timedelta(days=1)
    fired = op.advance(int(end.timestamp() * 1000))
    assert fired is not None
    got = dict(zip(fired["channel"].to_list(), fired["approx_distinct"].to_list(), strict=True))
    assert got == {"web": 3, "app": 2}
    assert fired["channel"].dtype == pl.String
    assert op.state_rows() == 0  # fired days are dropped


def test_a_checkpoint_of_another_plugin_is_refused(hll, built, cache_dir):
    op = WindowPluginAggregate(hll, Tumbling(DAY_MS), [])
    op.bind("date_time")
    when = pl.Series([datetime.datetime(2026, 12, 1)] * 2, dtype=pl.Datetime("ms"))
    op.process(pl.DataFrame({"bidder": [1, 2], "date_time": when}))
    state = op.snapshot()
    other = load_plugin(built["currency"], cache_dir=cache_dir)
    with pytest.raises(PluginError, match="state"):
        other.unseal(state["panes"].column("state")[0].as_py())
    blob = state["panes"].column("state")[0].as_py()
    flipped = blob[:-1] + bytes([blob[-1] ^ 0xFF])  # one register changed: the digest fails
    at = state["panes"].schema.get_field_index("state")
    damaged = state["panes"].set_column(at, "state", pa.array([flipped], pa.binary()))
    with pytest.raises(PluginError, match="state"):
        WindowPluginAggregate(hll, Tumbling(DAY_MS), []).restore({"panes": damaged})


def test_hll_estimate_of_q15_bidders_is_within_its_error_of_the_exact_count(hll):
    bids = _bids(1_000_000, days=1.6, seed=9)
    exact_sink = CollectSink()
    sources = NexmarkSources(bids=TableSource.single("bids", bids))
    Runner(BUILDERS["q15"](sources, exact_sink), RunnerConfig(batch_rows=65_536)).run()
    exact = exact_sink.result().select("day", "total_bidders").sort("day")
    assert exact.height == 2
    # One day past HyperLogLog's small-range correction (linear counting up to 2.5 m).
    assert exact["total_bidders"].max() > 10_240

    approx, _ = _run(bids, hll, RunnerConfig(batch_rows=65_536))
    got = approx.result().sort("day")
    assert got["day"].to_list() == exact["day"].to_list()
    for guess, truth in zip(got["total_bidders"], exact["total_bidders"], strict=True):
        assert abs(guess - truth) <= 3 * STANDARD_ERROR * truth, (guess, truth)


YAML = """
name: q15_approx
watermark: {out_of_orderness: 4s}
sources:
  bids: {path: bids.parquet}
streams:
  daily:
    from: bids
    steps:
      - select: [bidder, date_time]
      - window:
          tumbling: 1d
          plugin: {name: hll_distinct, columns: {value: bidder}}
output: daily
sink: {discard: {}}
"""


@pytest.fixture
def registry(built, cache_dir, tmp_path) -> PluginRegistry:
    folder = tmp_path / "registry"
    folder.mkdir()
    for name in ("hll_distinct", "currency"):
        shutil.copy(built[name], folder / f"{name}.wasm")
        shutil.copy(built[name].with_suffix(".json"), folder / f"{name}.json")
    return PluginRegistry(folder, RegistryConfig(cache_dir=cache_dir))


def _spec(tmp_path, text: str) -> PipelineSpec:
    path = tmp_path / "q15_approx.yaml"
    path.write_text(text)
    return PipelineSpec.from_yaml(path)


def test_the_yaml_window_with_a_plugin_equals_the_builder(tmp_path, hll, registry):
    bids = _bids(30_000, days=3.5, seed=7)
    pq.write_table(bids, tmp_path / "bids.parquet")
    sink = CollectSink()
    pipeline = build_with_plugins(_spec(tmp_path, YAML), registry, sink=sink)
    Runner(pipeline, RunnerConfig(batch_rows=1_000)).run()
    got = sink.result().select(
        pl.col("window_start").cast(pl.Date).alias("day"),
        pl.col("approx_distinct").alias("total_bidders"),
    )
    builder, _ = _run(bids, hll, RunnerConfig(batch_rows=1_000))
    assert got.sort("day").equals(builder.result().sort("day"))
    assert got.sort("day").equals(_model(bids))


def test_the_yaml_refuses_a_plugin_window_it_cannot_run_naming_the_field(tmp_path, registry):
    wrong_kind = YAML.replace("name: hll_distinct, columns: {value: bidder}", "name: currency")
    with pytest.raises(ConfigError) as err:
        build_with_plugins(_spec(tmp_path, wrong_kind), registry)
    assert err.value.fields == ["streams.daily.steps[1].window.plugin.name"]
    assert "aggregate plugin" in str(err.value)
    for bad, why in (
        (YAML.replace("tumbling: 1d", "session: 1h"), "tumbling or sliding"),
        (YAML.replace("tumbling: 1d", "tumbling: 1d\n          agg: {n: count}"), "give one of"),
    ):
        with pytest.raises(ConfigError) as err:
            _spec(tmp_path, bad)
        assert err.value.fields == ["streams.daily.steps.1"]  # the window step
        assert why in str(err.value)


def test_reset_state_finds_a_plugin_window_by_the_plugin_name(hll):
    """``dataflare pipeline reset-state --step hll_distinct`` is the way out when a
    window's checkpointed sketches are refused: the step is found by the plugin's name."""
    op = WindowPluginAggregate(hll, Tumbling(DAY_MS), [])
    op.bind("date_time")
    when = pl.Series([datetime.datetime(2026, 12, 1)], dtype=pl.Datetime("ms"))
    op.process(pl.DataFrame({"bidder": [1], "date_time": when}))
    states = {f"2:{op.name}": op.snapshot(), "0:Select": {}}
    assert resolve_step(states, "hll_distinct") == "2:window_plugin:hll_distinct"
