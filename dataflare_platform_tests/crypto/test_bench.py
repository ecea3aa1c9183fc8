"""``dataflare bench crypto``: one JSON object, encryption beside a plain copy of the same
column, as ratios (no speed threshold: the numbers go to docs/benchmarks.md)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dataflare_platform.cli import app
from dataflare_platform_tests.measured import measured


def test_bench_crypto_prints_rates_and_ratios_to_a_plain_copy() -> None:
    result = CliRunner().invoke(app, ["bench", "crypto", "--batch-rows", "4096", "--repeat", "1"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["benchmark"] == "crypto" and printed["batch_rows"] == 4096
    assert [c["column"] for c in printed["columns"]] == ["utf8_16_64", "int64"]
    for column in printed["columns"]:
        for key in ("encrypt", "decrypt", "copy", "deterministic_encrypt"):
            rate = column[f"{key}_values_per_s"]  # a number; its size is the benchmark's
            assert measured(rate), key
        ratio = (
            column["copy_values_per_s"]
            and column["encrypt_values_per_s"] / column["copy_values_per_s"]
        )
        assert column["encrypt_ratio_to_copy"] == pytest.approx(ratio, rel=0.05, abs=1e-5)
        assert column["ciphertext_bytes"] > column["input_bytes"]
