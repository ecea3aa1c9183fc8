"""``dataflare pipeline reset-state`` (issue 17): when a plugin step refuses the state
its checkpoint holds, the refusal names the command; the command (only with --yes)
drops that step's state from the last checkpoint, keeps the offsets and the other
steps' state, and is audited; the next run resumes from the offsets with that step
alone starting empty."""

from __future__ import annotations

import json
import textwrap

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dataflare_platform.cli import app
from dataflare_platform.engine.checkpoint import Checkpoint
from dataflare_platform.home import ProjectHome
from dataflare_platform_tests.engine.helpers import T0

runner = CliRunner()

SPEC = """
name: distinct_cli
catalog: {micro_batch: false}
sources:
  bids: {path: bids.parquet, columns: [auction, date_time]}
streams:
  out:
    from: bids
    steps:
      - key_by: [auction]
      - reduce: {n: count}
      - plugin: {name: hll_distinct, columns: {value: auction}}
output: out
sink: {kind: duckdb, path: out.duckdb, table: distinct_auctions}
"""


def write_bids(folder, auctions: list[int]) -> None:
    times = pa.array([T0 + 100 * i for i in range(len(auctions))]).cast(pa.timestamp("ms"))
    pq.write_table(
        pa.table({"auction": pa.array(auctions, pa.int64()), "date_time": times}),
        folder / "bids.parquet",
    )


def read_checkpoint(folder) -> Checkpoint:
    with duckdb.connect(str(folder / "out.duckdb")) as db:
        ((blob,),) = db.sql(
            "SELECT state FROM dataflare_checkpoints WHERE pipeline = 'distinct_cli'"
        ).fetchall()
    return Checkpoint.decode(bytes(blob))


def write_checkpoint(folder, checkpoint: Checkpoint) -> None:
    with duckdb.connect(str(folder / "out.duckdb")) as db:
        db.execute(
            "UPDATE dataflare_checkpoints SET state = $s WHERE pipeline = 'distinct_cli'",
            {"s": checkpoint.encode()},
        )


def step_of(checkpoint: Checkpoint, kind: str) -> str:
    (node,) = [k for k in checkpoint.states if k.split(":", 1)[1].startswith(kind)]
    return node


@pytest.fixture
def pipe(tmp_path):
    folder = tmp_path / "pipe"
    folder.mkdir()
    (folder / "distinct.yaml").write_text(textwrap.dedent(SPEC))
    return folder


def test_a_refused_plugin_state_is_reset_and_the_run_resumes(
    audited_home: ProjectHome, pipe, monkeypatch
):
    from dataflare_platform.compliance.audit import AuditLog
    from dataflare_platform.compliance.audit_keys import AuditSettings

    spec = str(pipe / "distinct.yaml")
    first = [i % 10 for i in range(20)]  # auctions 0..9
    write_bids(pipe, first)
    result = runner.invoke(app, ["pipeline", "run", spec, "--batch-rows", "10"])
    assert result.exit_code == 0, result.output
    checkpoint = read_checkpoint(pipe)
    plugin_step, reduce_step = step_of(checkpoint, "plugin:"), step_of(checkpoint, "Reduce")
    partials_before = checkpoint.states[reduce_step]["partials"]
    # The plugin's state is damaged on disk: one flipped byte of the registers.
    blob = bytearray(checkpoint.states[plugin_step]["plugin"].column("state")[0].as_py())
    blob[-1] ^= 0xFF
    checkpoint.states[plugin_step] = {"plugin": pa.table({"state": pa.array([bytes(blob)])})}
    write_checkpoint(pipe, checkpoint)

    second = [100 + i % 5 for i in range(20)]  # auctions 100..104, new rows at 20..39
    write_bids(pipe, first + second)
    refused = runner.invoke(app, ["pipeline", "run", spec, "--batch-rows", "10"])
    assert refused.exit_code != 0
    message = " ".join(refused.output.split())
    assert f"step {plugin_step}: its checkpointed state is refused" in message
    assert f"dataflare pipeline reset-state PIPELINE_FILE --step {plugin_step} --yes" in message
    assert "Traceback" not in refused.output

    unconfirmed = runner.invoke(app, ["pipeline", "reset-state", spec, "--step", "hll_distinct"])
    assert unconfirmed.exit_code == 2
    assert "add --yes" in unconfirmed.output and plugin_step in unconfirmed.output
    assert read_checkpoint(pipe).states[plugin_step]  # nothing dropped without --yes

    done = runner.invoke(app, ["pipeline", "reset-state", spec, "--step", "hll_distinct", "--yes"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["step"] == plugin_step and report["tables"] == {"plugin": 1}
    assert report["kept_steps"] == [reduce_step]
    assert report["offsets"] == {"bids/0": 20}
    assert report["plugin"]["plugin"] == "hll_distinct"
    kept = read_checkpoint(pipe)
    assert plugin_step not in kept.states and kept.offsets == {"bids/0": 20}
    assert kept.states[reduce_step]["partials"].equals(partials_before)

    with AuditLog.open(AuditSettings.resolve(home=audited_home.root)) as log:
        entry = log.last("pipeline_state_reset")
    assert entry is not None and entry.actor == "system:cli"
    assert entry.subject == "pipeline:distinct_cli"
    details = entry.payload()
    assert details["step"] == plugin_step
    assert details["state_sha256"] == report["state_sha256"]
    assert details["plugin"]["plugin"] == "hll_distinct"

    resumed = runner.invoke(app, ["pipeline", "run", spec, "--batch-rows", "10"])
    assert resumed.exit_code == 0, resumed.output
    out = json.loads(resumed.stdout)
    assert out["events_in"] == 40  # 20 restored + the 20 new rows, none read twice
    with duckdb.connect(str(pipe / "out.duckdb")) as db:
        last = db.sql("SELECT approx_distinct FROM distinct_auctions").fetchall()[-1][0]
    assert last == 5  # only auctions 100..104: the plugin step started empty
    final = read_checkpoint(pipe)
    counts = pl.from_arrow(final.states[reduce_step]["partials"]).sort("auction")
    assert counts["auction"].to_list() == [*range(10), *range(100, 105)]
    assert counts.get_column(counts.columns[1]).to_list() == [2] * 10 + [4] * 5  # kept state


def test_reset_state_names_the_steps_that_have_state(audited_home: ProjectHome, pipe):
    spec = str(pipe / "distinct.yaml")
    write_bids(pipe, list(range(10)))
    assert runner.invoke(app, ["pipeline", "run", spec]).exit_code == 0
    result = runner.invoke(app, ["pipeline", "reset-state", spec, "--step", "nope", "--yes"])
    assert result.exit_code == 2
    assert "no step of that name has state" in result.output and "Reduce" in result.output
