"""The two-plane rule and the style rules, checked on every run."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from dataflare_platform_tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "dataflare_platform"
# The control plane: the only modules allowed to import Dagster.
# The client talks to Dagster's GraphQL API: it belongs with the control plane.
CONTROL_PLANE = {
    PACKAGE / "defs",
    PACKAGE / "definitions.py",
    PACKAGE / "demo.py",
    PACKAGE / "client.py",
}


def _is_control_plane(path: Path) -> bool:
    return any(path == p or p in path.parents for p in CONTROL_PLANE)


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_data_plane_imports_nothing_from_dagster():
    data_plane = [p for p in PACKAGE.rglob("*.py") if not _is_control_plane(p)]
    assert len(data_plane) > 10
    offenders = {
        str(p.relative_to(REPO_ROOT)): sorted(m for m in _imported_modules(p) if "dagster" in m)
        for p in data_plane
    }
    assert {k: v for k, v in offenders.items() if v} == {}


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
