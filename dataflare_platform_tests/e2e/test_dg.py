"""The project as a ``dg`` project, through the real ``dg`` CLI in subprocesses:
``dg check defs`` (what CI runs), ``dg list components`` / ``dg list defs``, and a user
adding a pipeline and a governed dataset with ``dg scaffold defs`` and nothing else."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dataflare_platform.definitions import build_definitions
from dataflare_platform_tests.conftest import REPO_ROOT

pytestmark = pytest.mark.e2e

DG = Path(sys.executable).with_name("dg")
STREAM = "dataflare_platform.components.StreamPipelineComponent"
GOVERNED = "dataflare_platform.components.GovernedDatasetComponent"


@pytest.fixture(scope="module")
def dg_env(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("dg")
    dagster_home = root / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO_ROOT / "deployments" / "local" / "dagster.yaml", dagster_home)
    venv = Path(sys.executable).parent.parent
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "DATAFLARE_HOME": str(root / "home"),
        "VIRTUAL_ENV": str(venv),
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "NO_COLOR": "1",
    }
    env.pop("DATAFLARE_SENSOR_INTERVAL", None)
    return env


def dg(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(DG), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"dg {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def test_dg_check_defs_passes(dg_env):
    out = dg(dg_env, REPO_ROOT, "check", "defs").stdout
    assert "All component YAML validated successfully" in out
    assert "All definitions loaded successfully" in out


def test_dg_lists_the_components_and_the_same_definitions(dg_env):
    listed = json.loads(dg(dg_env, REPO_ROOT, "list", "components", "--json").stdout)
    assert {STREAM, GOVERNED} <= {c["key"] for c in listed["items"]}
    defs = json.loads(dg(dg_env, REPO_ROOT, "list", "defs", "--json").stdout)
    expected = build_definitions().resolve_asset_graph()
    assert {a["asset_key"] for a in defs["assets"]} == {
        k.to_user_string() for k in expected.get_all_asset_keys()
    }
    assert {c["key"] for c in defs["asset_checks"]} == {
        k.to_user_string() for k in expected.asset_check_keys
    }
    sources = {c["key"]: c.get("source", "") for c in defs["asset_checks"]}
    source, _line = sources["streams/hot_items:dead_letter_rate"].rsplit(":", 1)
    assert source == "dataflare_platform/defs/streams/hot_items/defs.yaml"


def test_a_pipeline_and_its_governance_are_added_with_dg_scaffold(dg_env, tmp_path):
    """In a copy of the project, so the repository is left as it was."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO_ROOT / "pyproject.toml", project)
    shutil.copytree(
        REPO_ROOT / "dataflare_platform",
        project / "dataflare_platform",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    env = {**dg_env, "PYTHONPATH": str(project)}  # the copy, not the installed package
    dg(env, project, "scaffold", "defs", STREAM, "streams/big_bids")
    dg(env, project, "scaffold", "defs", GOVERNED, "governance/datasets/big_bids")
    defs_dir = project / "dataflare_platform" / "defs"
    assert (
        (defs_dir / "streams" / "big_bids" / "defs.yaml").read_text().startswith(f"type: {STREAM}")
    )
    dg(env, project, "check", "defs")
    defs = json.loads(dg(env, project, "list", "defs", "--json").stdout)
    assert "streams/big_bids" in {a["asset_key"] for a in defs["assets"]}
    checks = {c["key"] for c in defs["asset_checks"]}
    assert {"streams/big_bids:dead_letter_rate", "streams/big_bids:freshness_check"} <= checks
    assert {"big_bids_sensor"} <= {s["name"] for s in defs["sensors"]}
    assert {"big_bids_job", "big_bids_continuous"} <= {j["name"] for j in defs["jobs"]}
