"""``dataflare pipeline validate|run`` of YAML pipelines (issue 17): a plugin step is
loaded as a Dagster run of the deployment loads it (same resource, same pin checks), and
hostile specs are refused with one line naming the field, never a crash."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import duckdb
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dataflare_platform.cli import app
from dataflare_platform.home import ProjectHome

runner = CliRunner()

MASKED = """
name: masked_cli
catalog: {micro_batch: false}
sources:
  persons: {path: persons.parquet, columns: [id, email_address, credit_card, date_time]}
streams:
  masked:
    from: persons
    steps:
      - plugin: {name: pii_mask, id: mask_email, columns: {text: email_address}}
      - plugin: {name: pii_mask, id: mask_card, columns: {text: credit_card}}
output: masked
sink: {kind: duckdb, path: out.duckdb, table: masked}
"""


@pytest.fixture
def masked_spec(tmp_path, small_nexmark):
    folder = tmp_path / "pipe"
    folder.mkdir()
    pq.write_table(small_nexmark["persons"], folder / "persons.parquet")
    (folder / "masked.yaml").write_text(MASKED)
    return folder / "masked.yaml"


def test_pipeline_run_loads_the_plugins_of_plugin_steps(home: ProjectHome, masked_spec):
    result = runner.invoke(app, ["pipeline", "run", str(masked_spec)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["events_in"] == out["events_out"] + out["dead_letters"] and out["events_out"] > 0
    with duckdb.connect(str(masked_spec.parent / "out.duckdb"), read_only=True) as db:
        emails = [r[0] for r in db.sql("SELECT email_address FROM masked").fetchall()]
    assert emails and all(e.startswith("***@") for e in emails)
    # Loaded as the deployment loads it: the sample was built and pinned in the home's lock.
    from dataflare_platform.plugins.lock import read_lock

    assert "pii_mask" in read_lock(home.root / "plugins.lock").plugins


def test_pipeline_run_respects_the_plugin_pins(audited_home: ProjectHome, masked_spec):
    """A module that differs from its pin is refused naming the steps, as in a Dagster
    run, and nothing is written. The refusal is audited, so the home has its audit keys
    (without them the audit append fails and is logged, traceback included, on the
    command's stderr now that the CLI configures its logs)."""
    home = audited_home
    from dataflare_platform.plugins.build import SAMPLES_DIR, build_plugin

    assert runner.invoke(app, ["pipeline", "run", str(masked_spec)]).exit_code == 0
    other = build_plugin(SAMPLES_DIR / "currency", home.root / "scratch")
    (home.root / "plugins" / "pii_mask.wasm").write_bytes(other.read_bytes())
    result = runner.invoke(app, ["pipeline", "run", str(masked_spec)])
    assert result.exit_code == 2, result.output
    assert "streams.masked.steps[0].plugin.name" in result.output
    assert "Traceback" not in result.output


def test_pipeline_run_takes_the_plugin_settings_from_the_deployment_environment(
    home: ProjectHome, masked_spec, tmp_path, monkeypatch
):
    monkeypatch.setenv("DATAFLARE_PLUGIN_DIR", str(tmp_path / "deployment-plugins"))
    monkeypatch.setenv("DATAFLARE_PLUGIN_MEMORY_MB", "lots")
    result = runner.invoke(app, ["pipeline", "run", str(masked_spec)])
    assert result.exit_code == 2 and "DATAFLARE_PLUGIN_MEMORY_MB" in result.output
    monkeypatch.setenv("DATAFLARE_PLUGIN_MEMORY_MB", "64")
    result = runner.invoke(app, ["pipeline", "run", str(masked_spec)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "deployment-plugins" / "pii_mask.wasm").exists()
    assert not (home.root / "plugins" / "pii_mask.wasm").exists()


HUGE_FILTER = """
name: huge
catalog: {micro_batch: false}
sources:
  bids: {path: bids.parquet, columns: [auction, price, date_time]}
streams:
  out:
    from: bids
    steps: [{filter: "FILTER"}]
output: out
sink: {discard: {}}
"""


@pytest.mark.parametrize("terms", [5_000, 10_000])
def test_pipeline_validate_refuses_a_huge_expression_instead_of_crashing(tmp_path, terms):
    """10 000 terms overflowed Polars' parser (the process died with SIGSEGV, rc 139);
    5 000 validated and then hung the run. Refused now, one line naming the field."""
    text = " OR ".join(f"auction = {i}" for i in range(terms))
    (tmp_path / "huge.yaml").write_text(HUGE_FILTER.replace("FILTER", text))
    done = subprocess.run(
        [sys.executable, "-m", "dataflare_platform.cli", "pipeline", "validate", "huge.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "streams.out.steps.0: filter: expression of" in done.stderr
    assert "over the limit" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr) < 1000


def test_pipeline_run_dead_letters_a_batch_whose_cast_fails(tmp_path, home: ProjectHome):
    import pyarrow as pa

    amounts = [str(i) for i in range(30)]
    amounts[17] = "seventeen"
    times = pa.array([1_767_225_600_000 + i for i in range(30)]).cast(pa.timestamp("ms"))
    table = pa.table({"id": list(range(30)), "amount": amounts, "date_time": times})
    pq.write_table(table, tmp_path / "rows.parquet")
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent(
            """
            name: casts
            catalog: {micro_batch: false}
            sources:
              rows: {path: rows.parquet, columns: [id, amount, date_time]}
            streams:
              out:
                from: rows
                steps: [{with_columns: {cents: "CAST(amount AS INT) * 100"}}]
            output: out
            sink: {kind: duckdb, path: out.duckdb, table: casts}
            """
        )
    )
    for _ in range(2):  # the second run resumes after the dead-lettered batch
        result = runner.invoke(
            app, ["pipeline", "run", str(tmp_path / "p.yaml"), "--batch-rows", "10"]
        )
        assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["events_in"], out["events_out"], out["dead_letters"]) == (30, 20, 10)
    with duckdb.connect(str(tmp_path / "out.duckdb"), read_only=True) as db:
        assert db.sql("SELECT count(*) FROM casts").fetchall() == [(20,)]


def test_a_run_config_nested_too_deeply_is_a_usage_error(tmp_path):
    from dataflare_platform.cli.launch import _run_config
    from dataflare_platform.errors import DataflareError

    path = tmp_path / "run.yaml"
    path.write_text("ops: " + "[" * 3000 + "]" * 3000)
    with pytest.raises(DataflareError, match="nested more than"):
        _run_config(path)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("ops: {a: 1}\nops: {b: 2}\n", "duplicate key"),
        ("- a\n- b\n", "mapping"),
        ("ops: [unclosed\n", "<file>"),
    ],
)
def test_a_bad_run_config_file_is_refused_naming_it(tmp_path, text, says):
    """`dataflare launch --config` reads YAML as every platform file is read: a second
    `ops:` would otherwise silently replace the first."""
    from dataflare_platform.cli.launch import _run_config
    from dataflare_platform.errors import ConfigError

    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=says) as err:
        _run_config(path)
    assert "--config" in str(err.value)
