"""Nexmark query throughput and latency: the engine against a one-shot DuckDB query over
the same files, in the same process.

Events are all input rows the query reads (bids, and persons/auctions where it joins
them). Batch latency is ingest (source release) to sink commit. ``--rate`` paces the
source to a fixed offered load so the latency is measured below saturation.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow.dataset as ds

from dataflare_platform import observability
from dataflare_platform.bench.common import machine, peak_rss_mb
from dataflare_platform.connectors.files import FileSource, ParquetSink
from dataflare_platform.engine import NullSink, Runner, RunnerConfig
from dataflare_platform.observability.tracing import configure_tracing
from dataflare_platform.queries.nexmark import (
    BUILDERS,
    COLUMNS,
    GROUND_TRUTH,
    TRUTH_PRELUDE,
    NexmarkSources,
)

WARMUP_BATCHES = 20


def _baseline(query: str, sources: NexmarkSources) -> tuple[float, int]:
    """One-shot DuckDB over the same files (scanned as Arrow datasets, with projection
    pushdown); the result is streamed and dropped so that, like the engine with its null
    sink, the baseline holds no output in memory."""
    conn = duckdb.connect()
    for kind in COLUMNS[query]:
        source = sources.need(kind)
        assert isinstance(source, FileSource)
        fmt = "parquet" if source.paths[0].suffix == ".parquet" else "arrow"
        conn.register(kind, ds.dataset([str(p) for p in source.paths], format=fmt))
    conn.execute(TRUTH_PRELUDE)
    started = time.perf_counter()
    reader = conn.sql(GROUND_TRUTH[query]).to_arrow_reader(100_000)
    rows = sum(batch.num_rows for batch in reader)
    return time.perf_counter() - started, rows


def run(
    query: str,
    bids: Path | None,
    persons: Path | None = None,
    auctions: Path | None = None,
    output: Path | None = None,
    batch_rows: int = 10_000,
    rate: float | None = None,
    repeat: int = 1,
    otel: bool = False,
) -> dict[str, object]:
    """Best of ``repeat`` engine runs and, separately, best of ``repeat`` baseline runs:
    the least disturbed run is the best estimate on a shared, noisy machine. ``otel``
    adds the same engine runs with metrics on (Prometheus multiprocess exporter into a
    private temporary directory) and traces (1 % sampled, and all sampled), interleaved
    with runs with both off (``SIDES``)."""
    sources = NexmarkSources.from_paths(query, bids, persons, auctions)
    events = sum(sources.need(kind).end_offset("0") or 0 for kind in COLUMNS[query])
    result = None
    for _ in range(max(1, repeat)):
        fresh = NexmarkSources.from_paths(query, bids, persons, auctions)
        sink = ParquetSink(output) if output else NullSink()
        config = RunnerConfig(batch_rows=batch_rows, rate=rate)
        attempt = Runner(BUILDERS[query](fresh, sink), config).run()
        if result is None or attempt.seconds < result.seconds:
            result = attempt
    rss = peak_rss_mb()
    base_seconds, base_rows = min(_baseline(query, sources) for _ in range(max(1, repeat)))
    m = result.metrics
    # Latency is reported for the steady state: the first batches pay one-off costs
    # (imports, Polars plan caches, page faults) and queue up behind them. The
    # percentiles over all batches are reported too.
    warmup = min(WARMUP_BATCHES, m.latency.count // 10)
    steady = m.latency.summary(skip=warmup)
    everything = m.latency.summary()
    events_per_s = events / result.seconds
    baseline_events_per_s = events / base_seconds
    return {
        "benchmark": "nexmark",
        "query": query,
        "events": events,
        "batch_rows": batch_rows,
        "repeat": repeat,
        "rate": rate,
        "seconds": round(result.seconds, 4),
        "events_per_s": round(events_per_s),
        "output_rows": m.events_out,
        "p50_ms": steady["p50_ms"],
        "p99_ms": steady["p99_ms"],
        "max_ms": steady["max_ms"],
        "warmup_batches": warmup,
        "p99_ms_with_warmup": everything["p99_ms"],
        "max_ms_with_warmup": everything["max_ms"],
        "peak_rss_mb": round(rss, 1),
        "late_events": m.late_events,
        "dead_letters": m.dead_letters,
        "state_rows_at_end": m.state_rows(),
        "source_blocked_s": round(m.source_blocked_s, 3),
        "baseline": "one-shot DuckDB SQL over the same files",
        "baseline_seconds": round(base_seconds, 4),
        "baseline_rows": base_rows,
        "baseline_events_per_s": round(baseline_events_per_s),
        # Paced runs are not measuring throughput: no ratio for them.
        "ratio": None if rate else round(events_per_s / baseline_events_per_s, 3),
        "machine": machine(),
        **(
            {
                "otel": _otel_overhead(
                    query, bids, persons, auctions, batch_rows, rate, repeat, events
                )
            }
            if otel
            else {}
        ),
    }


def _timed_run(query, bids, persons, auctions, batch_rows, rate) -> tuple[float, ...]:
    """(wall seconds, process CPU seconds of all threads, seconds spent exporting
    metrics, steady-state p99 batch latency in ms) of one engine run."""
    fresh = NexmarkSources.from_paths(query, bids, persons, auctions)
    config = RunnerConfig(batch_rows=batch_rows, rate=rate)
    cpu0 = time.process_time()
    result = Runner(BUILDERS[query](fresh, NullSink()), config).run()
    m = result.metrics
    p99 = m.latency.summary(skip=min(WARMUP_BATCHES, m.latency.count // 10))["p99_ms"]
    return result.seconds, time.process_time() - cpu0, m.telemetry_s, p99


# The sides of ``--otel``: (metrics on, trace sampling ratio or None for traces off).
# ``on`` is the deployment the issue sets the target for: metrics and 1 % of traces.
# ``traced`` samples every run, so every batch, plugin call and commit makes a span: the
# cost of a run that *is* traced (with 1 % sampling, 1 run in 100).
SIDES: dict[str, tuple[bool, float | None]] = {
    "off": (False, None),
    "metrics": (True, None),
    "on": (True, 0.01),
    "traced": (True, 1.0),
}
TRACE_RATIO = 0.01


def _otel_overhead(query, bids, persons, auctions, batch_rows, rate, repeat, events) -> dict:
    """Metrics and traces on against off in the same process, runs interleaved (the
    order of the sides rotates each round) so drift in the machine's load hits every
    side; best of each side. CPU-time rates are reported too: on a loaded machine they
    move less than wall-clock ones. Spans go to the SDK's in-memory exporter through a
    synchronous processor: their creation and hand-over are in the measured time, the
    OTLP encoding a collector needs (a background thread in production) is not."""
    directory = Path(tempfile.mkdtemp(prefix="dataflare-bench-metrics-"))
    settings = observability.ObservabilitySettings(
        enabled=True, exporters=("prometheus",), metrics_dir=directory / "m"
    )
    previous = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    runs: dict[str, list[tuple[float, ...]]] = {side: [] for side in SIDES}
    spans: dict[str, int] = dict.fromkeys(SIDES, 0)
    load_before = os.getloadavg()
    names = list(SIDES)
    try:
        for i in range(max(2, repeat)):
            for side in names[i % len(names) :] + names[: i % len(names)]:
                metrics_on, ratio = SIDES[side]
                observability.configure(settings if metrics_on else None)
                traced = configure_tracing(
                    None
                    if ratio is None
                    else observability.ObservabilitySettings(
                        traces_exporter="memory", trace_sample_ratio=ratio
                    )
                )
                runs[side].append(_timed_run(query, bids, persons, auctions, batch_rows, rate))
                if traced is not None and traced.memory is not None:
                    spans[side] += len(traced.memory.get_finished_spans())
    finally:
        observability.configure(None)
        configure_tracing(None)
        if previous is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = previous
        shutil.rmtree(directory, ignore_errors=True)
    wall = {side: min(r[0] for r in runs[side]) for side in SIDES}
    cpu = {side: min(r[1] for r in runs[side]) for side in SIDES}
    # The exporting time itself as a share of each run: what metrics cost without the
    # noise of comparing two runs (the median over the runs with metrics on).
    shares = sorted(r[2] / r[0] for r in runs["on"])
    # What metrics and traces off cost per batch: asked once per run, then a None check.
    calls = 1_000_000
    t0 = time.perf_counter()
    for _ in range(calls):
        observability.instruments()
    off_call_ns = (time.perf_counter() - t0) / calls * 1e9

    def side(name: str) -> dict[str, object]:
        return {
            "events_per_s": round(events / wall[name]),
            "ratio_wall": round(wall["off"] / wall[name], 3),
            "ratio_cpu": round(cpu["off"] / cpu[name], 3),
            "p99_ms": sorted(r[3] for r in runs[name])[len(runs[name]) // 2],
            "spans": spans[name],
        }

    return {
        "runs_per_side": len(runs["off"]),
        "trace_sample_ratio": TRACE_RATIO,
        "events_per_s_off": round(events / wall["off"]),
        "events_per_s_on": round(events / wall["on"]),
        "ratio_wall": round(wall["off"] / wall["on"], 3),
        "events_per_cpu_s_off": round(events / cpu["off"]),
        "events_per_cpu_s_on": round(events / cpu["on"]),
        "ratio_cpu": round(cpu["off"] / cpu["on"], 3),
        "overhead_pct_cpu": round((cpu["on"] / cpu["off"] - 1) * 100, 2),
        "overhead_pct_wall": round((wall["on"] / wall["off"] - 1) * 100, 2),
        "telemetry_share_pct": round(shares[len(shares) // 2] * 100, 3),
        # Median over the runs of each side's steady-state p99 (meaningful with --rate).
        "p99_ms_off": side("off")["p99_ms"],
        "p99_ms_on": side("on")["p99_ms"],
        "sides": {name: side(name) for name in SIDES},
        "instruments_lookup_ns_when_off": round(off_call_ns, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
