"""The ``dataflare`` app itself: --version, completion, the one error boundary, lazy
imports behind --help, the web server address from the environment, ``bench cli``."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dataflare_platform.bench.cli import HEAVY_MODULES, heavy_modules_after_help
from dataflare_platform.cli import app
from dataflare_platform.cli._common import (
    HOME_ENV_VAR,
    WEBSERVER_HOST_ENV_VAR,
    WEBSERVER_PORT_ENV_VAR,
    command_group,
)
from dataflare_platform.errors import ConfigError, DataflareError
from dataflare_platform.gateway.process import free_port
from dataflare_platform.home import HOME_ENV_VAR as HOME_MODULE_ENV_VAR

runner = CliRunner()
DATAFLARE = Path(sys.executable).with_name("dataflare")  # the installed entry point


def test_version_prints_the_installed_distribution_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"dataflare {version('dataflare-platform')}"


def test_shell_completion_is_enabled_on_the_installed_command():
    shown = subprocess.run(
        [str(DATAFLARE), "--show-completion", "bash"], capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert "_DATAFLARE_COMPLETE" in shown.stdout and "complete" in shown.stdout
    help_text = runner.invoke(app, ["--help"]).stdout
    assert "--install-completion" in help_text and "--show-completion" in help_text


class _RefusedError(DataflareError):
    pass


def _probe_app() -> typer.Typer:
    probe = command_group(help="probe")

    @probe.command("refuse")
    def refuse() -> None:
        raise _RefusedError("the thing is missing; create it first")

    @probe.command("bug")
    def bug() -> None:
        raise RuntimeError("a bug")

    return probe


def test_a_dataflare_error_prints_error_and_exits_2_without_a_traceback():
    result = runner.invoke(_probe_app(), ["refuse"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: the thing is missing; create it first"
    assert result.stdout == ""
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # typer.Exit, not the error itself


def test_a_bug_is_not_swallowed_by_the_boundary():
    result = runner.invoke(_probe_app(), ["bug"])
    assert isinstance(result.exception, RuntimeError)
    assert result.exit_code == 1


def test_the_boundary_covers_every_command_group_of_the_real_app():
    refused = runner.invoke(app, ["alerts", "list", "--status", "bogus"])
    assert refused.exit_code == 2
    assert refused.stderr.startswith("error: invalid --status")
    missing = runner.invoke(app, ["pipeline", "validate", "/nonexistent/pipeline.yaml"])
    assert missing.exit_code == 2 and missing.stderr.startswith("error: ")
    assert "Traceback" not in missing.output
    # A ConfigError from deep in a command still names the field.
    assert issubclass(ConfigError, DataflareError)


def test_home_option_names_the_same_variable_as_the_home_module():
    assert HOME_ENV_VAR == HOME_MODULE_ENV_VAR


def test_help_imports_no_data_plane_library():
    """The lazy-import rule, without timing: a fresh ``--help`` loads none of them."""
    assert heavy_modules_after_help() == []


@pytest.mark.parametrize(
    "command",
    [
        ["launch", "nexmark_ingest_job"],
        ["runs", "list"],
        ["runs", "show", "some-run"],
        ["backfill", "status", "some-backfill"],
    ],
)
def test_web_server_address_comes_from_the_environment(command):
    """Nothing listens on the port: the refusal names the address the variables gave."""
    port = free_port()
    env = {WEBSERVER_HOST_ENV_VAR: "localhost", WEBSERVER_PORT_ENV_VAR: str(port)}
    result = runner.invoke(app, command, env=env)
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert message.startswith("error: cannot reach the Dagster web server")
    assert f"localhost:{port}" in message
    # An explicit option wins over the environment.
    other = free_port()
    result = runner.invoke(app, [*command, "--port", str(other)], env=env)
    assert f"localhost:{other}" in " ".join(result.stderr.split())


def test_launch_help_shows_the_variables():
    help_text = runner.invoke(app, ["launch", "--help"], env={"COLUMNS": "200"}).stdout
    assert WEBSERVER_HOST_ENV_VAR in help_text and WEBSERVER_PORT_ENV_VAR in help_text


def test_bench_cli_prints_help_time_against_its_baselines():
    result = runner.invoke(app, ["bench", "cli", "--repeat", "1"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["benchmark"] == "cli" and printed["command"] == "dataflare --help"
    for key in ("help_cpu_s", "baseline_cpu_s", "typer_floor_cpu_s", "help_wall_s"):
        assert printed[key] > 0, key
    ratio = printed["help_cpu_s"] / printed["baseline_cpu_s"]
    assert printed["ratio"] == pytest.approx(ratio, rel=0.01)  # from unrounded times
    assert printed["heavy_modules"] == []
    assert set(HEAVY_MODULES) >= {"dagster", "pyarrow", "polars"}


def test_bench_pipeline_refuses_an_unknown_mode_or_pipeline():
    """Both before anything starts: no server, no generated data."""
    bad_mode = runner.invoke(app, ["bench", "pipeline", "--mode", "sometimes"])
    assert bad_mode.exit_code == 2 and "sometimes" in bad_mode.output
    bad_name = runner.invoke(app, ["bench", "pipeline", "--pipeline", "nope"])
    assert bad_name.exit_code == 2
    assert "no pipeline 'nope'" in bad_name.output and "hot_items" in bad_name.output
