"""The cost of usage statistics (issue 20 §4), side by side in one process: the currency
plugin called on the same small batches with and without a :class:`PluginUsage`
recorder attached (flushing for real into an event log every ``flush_interval_s``).

Small batches (default 1,024 rows) are the worst case: the recorder's cost is per call,
so the smaller the call, the larger its share. One plugin instance runs both sides: the
recorder is attached in every other half-round, in alternating order, so drift on a shared
machine hits both; reported are the median rounds' ratio, the fastest rounds' ratio and
the median of the per-round ratios. Also reported: the recorder's
own cost per call (``record()`` alone, no plugin) and how many events were written."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from dataflare_platform.events.log import EventLog
from dataflare_platform.plugins.build import SAMPLES_DIR, build_plugin
from dataflare_platform.plugins.registry import PluginRegistry
from dataflare_platform.plugins.usage import PluginUsage, UsageSettings, usage_topic


def bench_usage_overhead(
    rows: int = 1024, calls: int = 500, rounds: int = 41, flush_interval_s: float = 0.05
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_plugin(SAMPLES_DIR / "currency", root / "plugins")
        registry = PluginRegistry(root / "plugins")
        plugin = registry.load("currency")
        log = EventLog(root / "log")
        settings = UsageSettings(
            tenant="bench", tenant_salt="bench-salt-0123456789", flush_interval_s=flush_interval_s
        )
        usage = PluginUsage.attach(plugin, log, settings, "bench", "dataflare")
        batch = pl.DataFrame({"price": np.arange(rows, dtype=np.int64)})
        for _ in range(100):  # warm the instance and its arena
            plugin.map(batch)
        # One plugin instance, the recorder attached in every other half-round (so both
        # sides share the instance, its memory and the machine's drift).
        per_call: dict[str, list[float]] = {"without": [], "with": []}
        sides = [("without", None), ("with", usage)]
        for i in range(rounds):
            for label, tap in sides if i % 2 == 0 else sides[::-1]:
                plugin.usage = tap
                t0 = time.perf_counter()
                for _ in range(calls):
                    plugin.map(batch)
                per_call[label].append((time.perf_counter() - t0) / calls)
        plugin.usage = usage
        usage.close()
        events = usage_topic(log).read_all().num_rows
        # the recorder alone (a lock, three additions, one append), with its flushes
        alone = PluginUsage(
            usage_topic(log), "x", "1.0.0", "p", "bench", "t", flush_interval_s=flush_interval_s
        )
        t0 = time.perf_counter()
        for _ in range(100_000):
            alone.record(1e-5, rows, None)
        record_s = (time.perf_counter() - t0) / 100_000
        # one flush: the percentile, one Arrow row, one segment appended to the log
        flushes = []
        for _ in range(50):
            alone.record(1e-5, rows, "trap")
            t0 = time.perf_counter()
            alone.flush()
            flushes.append(time.perf_counter() - t0)
    without = statistics.median(per_call["without"])
    with_ = statistics.median(per_call["with"])
    paired = [w / wo for w, wo in zip(per_call["with"], per_call["without"], strict=True)]
    return {
        "benchmark": "plugin_usage_overhead",
        "rows_per_batch": rows,
        "calls_per_round": calls,
        "rounds": rounds,
        "flush_interval_s": flush_interval_s,
        "us_per_call_without": round(without * 1e6, 2),
        "us_per_call_with": round(with_ * 1e6, 2),
        "ratio_with_over_without": round(with_ / without, 4),
        "ratio_of_fastest_rounds": round(min(per_call["with"]) / min(per_call["without"]), 4),
        "median_paired_round_ratio": round(statistics.median(paired), 4),
        "record_us_per_call": round(record_s * 1e6, 3),
        "flush_ms_median": round(statistics.median(flushes) * 1e3, 3),
        "usage_events_written": events,
    }
