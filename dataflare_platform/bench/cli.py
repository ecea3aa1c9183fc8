"""Start-up cost of ``dataflare --help`` against baselines measured in the same run.

Each side is a fresh interpreter (start-up is the cost under test), timed as wall time
and as CPU time of the child (user + system, from ``RUSAGE_CHILDREN``); the fastest of
``repeat`` runs counts. Baselines: ``python -c pass`` (the interpreter alone) and a
two-command typer app's ``--help`` (typer and rich rendering help, the floor any typer
CLI pays). ``ratio`` is help CPU / ``python -c pass`` CPU; ``ratio_to_typer`` relates it
to the typer floor. ``heavy_modules`` lists the data-plane libraries ``--help`` imported:
it should be empty (lazy imports keep them to the commands that use them).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

from dataflare_platform.bench.common import machine

# Libraries a `dataflare --help` has no use for; each costs 0.05-1 s to import.
HEAVY_MODULES = (
    "dagster",
    "dagster_graphql",
    "duckdb",
    "numpy",
    "polars",
    "pyarrow",
    "pydantic",
    "requests",
    "sqlalchemy",
    "wasmtime",
    "yaml",
)

_TYPER_FLOOR = """
import typer
app = typer.Typer()
@app.command()
def one(): "One."
@app.command()
def two(): "Two."
app(["--help"])
"""

_HELP = "from dataflare_platform.cli import app; app(['--help'], prog_name='dataflare')"

_MODULES_AFTER_HELP = f"""
import json, sys
from dataflare_platform.cli import app
try:
    app(["--help"], prog_name="dataflare")
except SystemExit:
    pass
loaded = sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)
sys.__stdout__.write("\\n" + json.dumps(loaded) + "\\n")
"""


def _time_child(code: str) -> tuple[float, float]:
    """Wall and CPU seconds of ``python -c code`` in a fresh interpreter."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def heavy_modules_after_help() -> list[str]:
    """The HEAVY_MODULES a fresh ``dataflare --help`` leaves imported."""
    out = subprocess.run(
        [sys.executable, "-c", _MODULES_AFTER_HELP],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def run(repeat: int = 5) -> dict[str, object]:
    """Time ``--help`` and both baselines, interleaved round by round so machine noise
    falls on every side alike."""
    rounds: dict[str, list[tuple[float, float]]] = {"help": [], "python": [], "typer": []}
    for _ in range(repeat):
        rounds["python"].append(_time_child("pass"))
        rounds["typer"].append(_time_child(_TYPER_FLOOR))
        rounds["help"].append(_time_child(_HELP))
    best = {
        side: (min(w for w, _ in runs), min(c for _, c in runs)) for side, runs in rounds.items()
    }
    (help_wall, help_cpu), (py_wall, py_cpu), (ty_wall, ty_cpu) = (
        best["help"],
        best["python"],
        best["typer"],
    )
    return {
        "benchmark": "cli",
        "command": "dataflare --help",
        "repeat": repeat,
        "help_wall_s": round(help_wall, 4),
        "help_cpu_s": round(help_cpu, 4),
        "baseline": "python -c pass (fresh interpreter)",
        "baseline_wall_s": round(py_wall, 4),
        "baseline_cpu_s": round(py_cpu, 4),
        "ratio": round(help_cpu / py_cpu, 2) if py_cpu else None,
        "typer_floor_wall_s": round(ty_wall, 4),
        "typer_floor_cpu_s": round(ty_cpu, 4),
        "ratio_to_typer": round(help_cpu / ty_cpu, 2) if ty_cpu else None,
        "heavy_modules": heavy_modules_after_help(),
        **machine(),
    }
