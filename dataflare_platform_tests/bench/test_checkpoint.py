"""``dataflare bench checkpoint``: both sides round-trip the same state, and the JSON
names what was measured (timings are for the benchmark, not checked here)."""

import json

import pyarrow as pa
from typer.testing import CliRunner

from dataflare_platform.bench.checkpoint import copying_decode, joined_encode, state
from dataflare_platform.cli.main import app
from dataflare_platform.engine.checkpoint import Checkpoint


def test_the_baseline_writes_the_same_layout_and_both_decoders_read_it():
    table = state(2_000, seed=3)
    assert table.num_rows == 2_000 and table.schema.field("url").type in (
        pa.large_string(),
        pa.string(),
        pa.string_view(),
    )
    cp = Checkpoint(offsets={"bids/0": 2_000}, states={"n": {"store": table}})
    old = joined_encode(cp)
    assert Checkpoint.decode(old).states["n"]["store"].equals(table)
    assert copying_decode(cp.encode())["store"].equals(table)


def test_the_command_prints_both_sides_and_their_ratio():
    result = CliRunner().invoke(app, ["bench", "checkpoint", "--rows", "5000", "--repeat", "1"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{") :])
    assert out["benchmark"] == "checkpoint" and out["rows"] == 5_000
    assert out["blob_mb"] > 0 and out["encode_ratio"] > 0
    assert {"encode_s", "baseline_encode_s", "decode_s", "baseline_decode_s"} <= out.keys()
