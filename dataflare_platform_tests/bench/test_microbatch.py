"""``dataflare bench nexmark --baseline microbatch``: the hand-written Polars loop gives
the engine's rows for every query it has a loop for, at any batch size (a baseline
computing something else would make its ratio meaningless)."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner
from polars.testing import assert_frame_equal

from dataflare_platform.bench import microbatch
from dataflare_platform.cli import app
from dataflare_platform.connectors.files import ParquetSink
from dataflare_platform.datagen import NexmarkConfig, write_nexmark
from dataflare_platform.engine import Runner, RunnerConfig
from dataflare_platform.queries.nexmark import BUILDERS, NexmarkSources
from dataflare_platform_tests.measured import measured


@pytest.fixture(scope="module")
def bids(tmp_path_factory):
    data = tmp_path_factory.mktemp("nexmark")
    write_nexmark(NexmarkConfig(events=30_000, events_per_second=500.0, seed=7), data)
    return data / "bids"


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(df.columns)


@pytest.mark.parametrize("query", sorted(microbatch.LOOPS))
@pytest.mark.parametrize("batch_rows", [1_000, 65_536])
def test_loop_gives_the_engines_rows(query, batch_rows, bids, tmp_path):
    out = tmp_path / "out"
    sources = NexmarkSources.from_paths(query, bids)
    result = Runner(BUILDERS[query](sources, ParquetSink(out)), RunnerConfig(batch_rows)).run()
    assert result.metrics.late_events == 0  # the loop has no lateness to apply
    engine = pl.read_parquet(out)
    fresh = NexmarkSources.from_paths(query, bids)
    seconds, rows, loop = microbatch.run(query, fresh.need("bids"), batch_rows, collect=True)
    assert loop is not None and rows == loop.height == engine.height > 0
    assert measured(seconds)
    assert_frame_equal(_sorted(loop.select(engine.columns)), _sorted(engine))


def test_cli_reports_both_ratios(bids):
    from typer.main import get_command

    result = CliRunner().invoke(
        get_command(app),
        ["bench", "nexmark", "--query", "q7", "--input", str(bids), "--baseline", "microbatch"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["microbatch_rows"] == report["output_rows"] == report["baseline_rows"] > 0
    assert report["ratio_vs_microbatch"] > 0 and report["ratio"] > 0
    assert report["microbatch_events_per_s"] > 0


def test_query_without_a_loop_reports_no_ratio(tmp_path):
    data = tmp_path / "nexmark"
    write_nexmark(NexmarkConfig(events=5_000, events_per_second=500.0), data)
    from typer.main import get_command

    result = CliRunner().invoke(
        get_command(app),
        [
            "bench", "nexmark", "--query", "q3", "--input", str(data / "bids"),
            "--persons", str(data / "persons"), "--auctions", str(data / "auctions"),
            "--baseline", "microbatch",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["ratio_vs_microbatch"] is None and report["ratio"] > 0


def _bench(*args: str) -> dict:
    from typer.main import get_command

    result = CliRunner().invoke(get_command(app), ["bench", "nexmark", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_ttl_bounds_the_keyed_top_n_state_without_changing_its_output(bids):
    """Bids go to auctions opened in the last few seconds (generator), so a 10 s TTL
    forgets no auction that gets another bid: the same upserts. The end of the input
    moves the watermark past every key's TTL, so the bounded run ends with no state."""
    whole = _bench("--query", "q19", "--input", str(bids))
    bounded = _bench("--query", "q19", "--input", str(bids), "--ttl", "10s")
    assert bounded["ttl"] == "10s" and whole["ttl"] is None
    assert bounded["output_rows"] == whole["output_rows"] > 0
    assert bounded["state_rows_at_end"] == 0 < whole["state_rows_at_end"]
    # Thread CPU per step is reported for each operator node (here the keyed top-N).
    (top_n,) = [v for k, v in bounded["operators_cpu"].items() if "TopN" in k]
    assert top_n["process"]["calls"] > 0
    assert top_n["process"]["p50_ms"] <= top_n["process"]["p99_ms"] <= top_n["process"]["max_ms"]


def test_ttl_is_refused_for_a_query_without_keyed_state(bids):
    from typer.main import get_command

    result = CliRunner().invoke(
        get_command(app),
        ["bench", "nexmark", "--query", "q1", "--input", str(bids), "--ttl", "10s"],
    )
    assert result.exit_code != 0
    assert "--ttl applies to q18, q19, not q1" in result.output
