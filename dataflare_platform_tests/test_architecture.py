"""The two-plane rule and the style rules, checked on every run."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dataflare_platform_tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "dataflare_platform"
# The control plane: the only modules allowed to import Dagster (the import contracts in
# pyproject.toml say so). The client talks to Dagster's GraphQL API: it belongs with the
# control plane, as do the web front (it wraps dagster-webserver) and the instance plug-ins
# (a run coordinator is a Dagster class).
CONTROL_PLANE = {
    PACKAGE / "defs",
    PACKAGE / "components",
    PACKAGE / "definitions.py",
    PACKAGE / "demo.py",
    PACKAGE / "client",
    PACKAGE / "gateway",
    PACKAGE / "instance",
}


def test_import_contracts_hold():
    """The layers, the acyclic packages, the Dagster-free data plane and the library that
    never imports the benchmarks: the contracts in pyproject's ``[tool.importlinter]``."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_data_plane_module_is_in_the_dagster_contract():
    """A forbidden contract only checks the modules it names: every top-level module of
    the package is either control plane or named there (import-linter cannot say
    "everything but")."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    named = {
        module
        for contract in config["contracts"]
        if contract["id"] in ("data-plane-without-dagster", "cli-without-dagster")
        for module in contract["source_modules"]
    }
    top_level = {
        f"dataflare_platform.{p.stem if p.is_file() else p.name}"
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    }
    control_plane = {f"dataflare_platform.{p.stem}" for p in CONTROL_PLANE}
    assert top_level - control_plane - named == set()


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]])
def test_ruff_is_clean(args):
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run(
        [str(ruff), *args, "dataflare_platform", "dataflare_platform_tests"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_control_plane_module_imports_on_its_own():
    """Each defs module imported first, in a fresh interpreter: an import cycle between
    domains shows only for some import orders (a run worker loads one module first)."""
    modules = sorted(
        ".".join(p.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (PACKAGE / "defs").rglob("*.py")
    )
    code = (
        "import importlib, subprocess, sys\n"
        "bad = []\n"
        "for name in sys.argv[1:]:\n"
        "    r = subprocess.run([sys.executable, '-c', f'import {name}'], capture_output=True,"
        " text=True)\n"
        "    if r.returncode:\n"
        "        bad.append(name + ': ' + r.stderr.strip().splitlines()[-1])\n"
        "print('\\n'.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *modules], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", out.stdout
