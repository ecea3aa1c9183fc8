"""``dataflare bench audit``: one JSON object, authenticated appends beside the untagged
append in the same process, as a ratio (no speed threshold: the numbers go to
docs/benchmarks.md)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dataflare_platform.cli import app
from dataflare_platform_tests.measured import measured


def test_bench_audit_prints_both_sides_and_their_ratio(dsn: str) -> None:
    result = CliRunner().invoke(
        app,
        ["bench", "audit", "--entries", "20", "--repeat", "1", "--postgres-url", dsn],
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["benchmark"] == "audit" and printed["entries"] == 20
    # Rates are the benchmark's business: here, that each is reported as a number and
    # the ratio is the one of the two rates printed.
    assert measured(printed["tag_us"])
    for backend in ("sqlite", "postgresql"):
        side = printed[backend]
        assert measured(side["plain_appends_per_s"]) and measured(
            side["authenticated_appends_per_s"]
        )
        ratio = side["authenticated_appends_per_s"] / side["plain_appends_per_s"]
        assert side["ratio"] == pytest.approx(ratio, rel=0.01)
        assert measured(side["verify_entries_per_s"])
