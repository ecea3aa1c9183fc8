"""``dataflare bench plugins --suite marketplace`` runs end to end on a small count and
reports every measurement (no timing is asserted: the numbers are the output)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dataflare_platform.cli import app
from dataflare_platform_tests.measured import measured


def test_marketplace_bench_reports_install_verify_and_load_cost() -> None:
    result = CliRunner().invoke(
        app, ["bench", "plugins", "--suite", "marketplace", "--repeat", "2", "--loads", "5"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["benchmark"] == "marketplace" and out["loads"] == 5
    for key in ("install_ms", "verify_ms", "load_check_cold_ms", "load_check_warm_us"):
        assert measured(out[key]), key
    load = out["load"]
    assert measured(load["baseline_ms"]) and measured(load["with_verification_ms"])
    # The ratio is of the unrounded medians: equal to the printed ones' up to rounding.
    assert abs(load["ratio"] - load["with_verification_ms"] / load["baseline_ms"]) < 0.01


def test_unknown_suite_is_refused() -> None:
    result = CliRunner().invoke(app, ["bench", "plugins", "--suite", "nope"])
    assert result.exit_code == 2
    assert "all, runtime or marketplace" in result.output
