"""Generator throughput against a raw-numpy baseline in the same process.

The baseline draws the same number of uniform random columns per bid and wraps them
in an Arrow table, with none of Nexmark's id, skew, string or time rules: the floor a
vectorised generator on this machine cannot beat. ``ratio`` is generator / baseline.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataflare_platform.bench.common import best_of, machine, peak_rss_mb
from dataflare_platform.datagen import NexmarkConfig, NexmarkGenerator, write_nexmark

# Random draws per bid in the generator: auction (2), bidder (2), hot flags (3), price,
# channel (2), jitter, extra.
BASELINE_COLUMNS = 12


def _generate_all(generator: NexmarkGenerator) -> int:
    bids = 0
    for index in generator.chunks():
        bids += generator.chunk(index).bids.num_rows
    return bids


def _baseline(config: NexmarkConfig, bids_total: int) -> int:
    rng = np.random.default_rng(config.seed)
    done = 0
    per_chunk = max(1, int(config.chunk_events * 46 / 50))
    while done < bids_total:
        size = min(per_chunk, bids_total - done)
        columns = [pa.array(rng.integers(0, 1 << 40, size=size)) for _ in range(BASELINE_COLUMNS)]
        pa.Table.from_arrays(columns, names=[f"c{i}" for i in range(BASELINE_COLUMNS)])
        done += size
    return done


def run(
    events: int = 10_000_000, chunk_events: int = 1_000_000, repeat: int = 3, files: bool = True
) -> dict[str, object]:
    config = NexmarkConfig(events=events, chunk_events=chunk_events)
    generator = NexmarkGenerator(config)
    generator.chunk(0)  # warm-up: imports, pools, first-touch memory
    seconds, bids = best_of(repeat, lambda: _generate_all(generator))
    base_seconds, _ = best_of(repeat, lambda: _baseline(config, bids))
    result: dict[str, object] = {
        "benchmark": "datagen",
        "events": events,
        "bids": bids,
        "chunk_events": chunk_events,
        "seconds": round(seconds, 4),
        "events_per_s": round(events / seconds),
        "bids_per_s": round(bids / seconds),
        "baseline": f"{BASELINE_COLUMNS} uniform int64 columns per bid into Arrow (numpy)",
        "baseline_bids_per_s": round(bids / base_seconds),
        "ratio": round(base_seconds / seconds, 3),
        "target_bids_per_s": 5_000_000,
    }
    if files:
        with tempfile.TemporaryDirectory(prefix="dataflare-bench-") as tmp:
            summary = write_nexmark(config, Path(tmp))
        result["parquet_seconds"] = round(summary.seconds, 4)
        result["parquet_events_per_s"] = round(events / summary.seconds)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    result["machine"] = machine()
    return result
