"""Micro-benchmark: the currency map through the WASM plugin vs the Polars expression on
64k-row batches (issue 5 target: plugin >= 0.5 x Polars)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from dataflare_platform.plugins.build import SAMPLES_DIR, build_plugin
from dataflare_platform.plugins.runtime import load_plugin


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_plugins(rows: int = 65_536, batches: int = 16, repeat: int = 5) -> dict:
    """Rows/s of the plugin and of Polars over the same batches, and their ratio."""
    rng = np.random.default_rng(0)
    frames = [pl.DataFrame({"price": rng.integers(0, 10**9, rows)}) for _ in range(batches)]
    with tempfile.TemporaryDirectory() as tmp:
        wasm = build_plugin(SAMPLES_DIR / "currency", Path(tmp))
        plugin = load_plugin(wasm, cache_dir=Path(tmp) / "cache")
        expr = (pl.col("price") * 0.908).alias("price_eur")
        plugin.map(frames[0])  # warm the arena
        t_plugin = _best(lambda: [plugin.map(f) for f in frames], repeat)
        t_polars = _best(lambda: [f.with_columns(expr) for f in frames], repeat)
    total = rows * batches
    return {
        "rows_per_batch": rows,
        "batches": batches,
        "plugin_rows_per_s": total / t_plugin,
        "polars_rows_per_s": total / t_polars,
        "ratio": t_polars / t_plugin,
    }
