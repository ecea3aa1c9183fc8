"""``dataflare pipeline validate|run`` of YAML pipelines (issue 17): a plugin step is
loaded as a Dagster run of the deployment loads it (same resource, same pin checks), and
hostile specs are refused with one line naming the field, never a crash."""

from __future__ import annotations

import json

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


def test_pipeline_run_respects_the_plugin_pins(home: ProjectHome, masked_spec):
    """A module that differs from its pin is refused naming the steps, as in a Dagster
    run, and nothing is written."""
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
