"""Embedded event log: append and scan throughput, and produce→consume latency.

Baselines run in the same process over the same batches: writing them all to one Arrow
IPC file in one go (append), and reading that file back in one call (scan). The log pays
for one file per append, the lock, the rename and the checksum; the ratios show what
that costs.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataflare_platform.bench.common import machine, peak_rss_mb
from dataflare_platform.datagen import SCHEMAS, NexmarkConfig, NexmarkGenerator
from dataflare_platform.events.log import EventLog
from dataflare_platform.events.log.segments import forget_verified


def nexmark_bids(events: int) -> pa.Table:
    """Decoded (plain utf8) Nexmark bids, as producers would hand them over."""
    gen = NexmarkGenerator(NexmarkConfig(events=events, chunk_events=min(events, 1_000_000)))
    parts = [gen.chunk(i).tables(decode=True)["bids"] for i in gen.chunks()]
    return pa.concat_tables(parts).combine_chunks().cast(SCHEMAS["bids"])


def _batches(table: pa.Table, rows: int) -> list[pa.Table]:
    return [table.slice(i, rows) for i in range(0, table.num_rows, rows)]


def bench_log(events: int = 2_000_000, batch_rows: int = 10_000, fsync: bool = False) -> dict:
    bids = nexmark_bids(events)
    batches = _batches(bids, batch_rows)
    n = bids.num_rows
    with tempfile.TemporaryDirectory(prefix="dataflare-bench-") as tmp:
        root = Path(tmp)
        log = EventLog(root / "log")
        topic = log.create_topic("bids", bids.schema, fsync=fsync)
        started = time.perf_counter()
        for b in batches:
            topic.append(b, partition=0)
        append_s = time.perf_counter() - started

        started = time.perf_counter()
        with (root / "baseline.arrow").open("wb") as f, pa.ipc.new_file(f, bids.schema) as w:
            for b in batches:
                w.write_table(b)
        base_append_s = time.perf_counter() - started

        # A fresh process's view: its open verifies the new segments (recovery), so
        # this scan's reads find them checked.
        reader = EventLog(root / "log").topic("bids")
        scan_s = _scan(reader, batch_rows, n)
        # A process opening a log verified before: recovery skips the segments, so
        # each read checks its segment's CRC the first time (what checking costs).
        forget_verified()
        scan_checked_s = _scan(EventLog(root / "log").topic("bids"), batch_rows, n)

        started = time.perf_counter()
        with pa.memory_map(str(root / "baseline.arrow")) as src:
            whole = pa.ipc.open_file(src).read_all()
            _ = len(whole.column("price").chunks)
        base_scan_s = time.perf_counter() - started
        latency = _latency(log, bids, rate=100_000, rows=1_000, seconds=3.0)
    return {
        "benchmark": "events-log",
        "events": n,
        "batch_rows": batch_rows,
        "fsync": fsync,
        "append_events_per_s": round(n / append_s),
        "append_baseline": "one Arrow IPC file written in one go",
        "append_baseline_events_per_s": round(n / base_append_s),
        "append_ratio": round(base_append_s / append_s, 3),
        "scan_events_per_s": round(n / scan_s),
        "scan_baseline": "one Arrow IPC file read in one call",
        "scan_baseline_events_per_s": round(n / base_scan_s),
        "scan_ratio": round(base_scan_s / scan_s, 3),
        "scan_checking_crc_events_per_s": round(n / scan_checked_s),
        "scan_checking_crc_ratio": round(scan_s / scan_checked_s, 3),
        **latency,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "machine": machine(),
    }


def _scan(reader, batch_rows: int, n: int) -> float:
    started = time.perf_counter()
    offset, scanned = 0, 0
    while True:
        table = reader.read(0, offset, batch_rows)
        if table.num_rows == 0:
            break
        # Touch the values, as a consumer would (memory-mapped pages are lazy).
        scanned += len(table.column("price").chunks)
        offset += table.num_rows
    assert offset == n
    return time.perf_counter() - started


def _latency(log: EventLog, bids: pa.Table, rate: float, rows: int, seconds: float) -> dict:
    """A producer thread appends ``rows``-row batches paced to ``rate`` events/s; a
    consumer thread polls (1 ms idle sleep) and records append-start → delivery."""
    topic = log.create_topic("latency", bids.schema)
    total = int(rate * seconds) // rows
    sent: dict[int, float] = {}
    samples: list[float] = []
    done = threading.Event()

    def produce() -> None:
        t0 = time.perf_counter()
        for i in range(total):
            due = t0 + i * rows / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent[i * rows] = time.perf_counter()
            topic.append(bids.slice((i * rows) % (bids.num_rows - rows), rows), partition=0)
        done.set()

    def consume() -> None:
        reader = EventLog(log.root).topic("latency")
        offset = 0
        while offset < total * rows:
            table = reader.read(0, offset, 100_000)
            if table.num_rows == 0:
                time.sleep(0.001)
                continue
            now = time.perf_counter()
            for start in range(offset, offset + table.num_rows, rows):
                samples.append((now - sent[start]) * 1000)
            offset += table.num_rows

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = np.asarray(samples)
    return {
        "latency_rate_events_per_s": rate,
        "latency_batch_rows": rows,
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 3),
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 3),
        "latency_max_ms": round(float(lat.max()), 3),
    }
