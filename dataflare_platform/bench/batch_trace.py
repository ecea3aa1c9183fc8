"""Where a slow batch's time went: one Nexmark engine run with every operator call, every
keyed-store merge and every store-filter build timed (wall and thread CPU), for latency
work (issue 21 §5). ``dataflare bench nexmark`` reports percentiles; this says what ran
while the slow batches waited.

The run is the benchmark's own (``bench.nexmark._engine_run``: same sources, sink and
runner). The timings are taken by wrapping, for the length of the run only, the
runner's ``_push`` (one operator call), ``keyed_store.merge_many`` (a merge, on the
batch thread or a helper thread) and ``keyed_store.StoreFilter`` (a filter build), and
the batch latency histogram's ``record`` (the time each latency is recorded). Wrapping costs
a few microseconds per call, so the latencies are a little above the benchmark's.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np

from dataflare_platform.bench.common import machine
from dataflare_platform.errors import InvalidInputError

SLOWEST = 10  # slow batches listed, slowest first


@dataclass(frozen=True)
class Call:
    """One timed call: what, on which thread, when (perf_counter seconds), wall and CPU
    (its own: without the calls nested in it), ``span``, the wall time from its start
    to its end (nested calls included: at least ``wall``), and the rows it handled."""

    what: str
    thread: str
    start: float
    wall: float
    cpu: float
    span: float
    rows: int = 0

    @property
    def end(self) -> float:
        return self.start + self.span


def _timed(calls: list[Call], what, fn, rows=None):
    """``fn`` wrapped to append a ``Call`` per call (``what``: a name, or a function of
    the arguments giving one). Calls of the same wrapper nested on one thread (an
    operator's ``_push`` pushes its output to the next operator inside it) are timed
    exclusively: each call's wall and CPU leave out those of the calls inside it."""
    nested = threading.local()

    def wrapper(*args, **kwargs):
        inner: list[float] = [0.0, 0.0]  # wall, CPU of the calls inside this one
        outer = getattr(nested, "frame", None)
        nested.frame = inner
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
            nested.frame = outer
            if outer is not None:
                outer[0] += wall
                outer[1] += cpu
            name = what(*args) if callable(what) else what
            calls.append(
                Call(
                    name,
                    threading.current_thread().name,
                    t0,
                    wall - inner[0],
                    cpu - inner[1],
                    wall,
                    rows(*args) if rows is not None else 0,
                )
            )

    return wrapper


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    p50, p90, p99 = np.percentile(np.asarray(values) * 1000, [50, 90, 99])
    return {
        "p50_ms": round(float(p50), 2),
        "p90_ms": round(float(p90), 2),
        "p99_ms": round(float(p99), 2),
        "max_ms": round(max(values) * 1000, 2),
    }


def run(
    query: str,
    bids: Path | None,
    persons: Path | None = None,
    auctions: Path | None = None,
    batch_rows: int = 10_000,
    rate: float | None = 1_000_000,
    ttl: str | None = None,
) -> dict[str, object]:
    """One traced run of ``query``; the report as a dict (see ``docs/benchmarks.md``)."""
    from dataflare_platform.bench import nexmark
    from dataflare_platform.engine import metrics, runner
    from dataflare_platform.engine.operators import keyed_store

    if ttl is not None and query not in nexmark.TTL_QUERIES:
        raise InvalidInputError(f"--ttl applies to {', '.join(nexmark.TTL_QUERIES)}")
    calls: list[Call] = []
    # Every histogram's records (the operators' CPU per call uses the same class), by
    # histogram: the run's batch latency histogram is picked out once the run is over.
    recorded: list[tuple[int, float, float]] = []
    original_record = metrics.LatencyHistogram.record

    def record(histogram, ms: float) -> None:
        recorded.append((id(histogram), time.perf_counter(), ms))
        original_record(histogram, ms)

    def push_name(_run, node_id, *_):
        return node_id  # "<n>:<operator>", as in the benchmark's operators_cpu

    def merge_rows(segments, *_):
        return sum(s.frame.height for s in segments)

    def filter_rows(hashes, *_):
        return sum(h.size for h in hashes)

    config = runner.RunnerConfig(batch_rows=batch_rows, rate=rate)
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(metrics.LatencyHistogram, "record", record))
        stack.enter_context(
            mock.patch.object(runner._Run, "_push", _timed(calls, push_name, runner._Run._push))
        )
        stack.enter_context(
            mock.patch.object(
                keyed_store,
                "merge_many",
                _timed(calls, "merge", keyed_store.merge_many, merge_rows),
            )
        )
        stack.enter_context(
            mock.patch.object(
                keyed_store,
                "StoreFilter",
                _timed(calls, "store_filter", keyed_store.StoreFilter, filter_rows),
            )
        )
        result, _, _ = nexmark._engine_run(query, bids, persons, auctions, None, config, ttl=ttl)
    mine = id(result.metrics.latency)
    latencies = [(at, ms) for histogram, at, ms in recorded if histogram == mine]
    return report(query, batch_rows, rate, ttl, result.seconds, calls, latencies)


def report(
    query: str,
    batch_rows: int,
    rate: float | None,
    ttl: str | None,
    seconds: float,
    calls: list[Call],
    recorded: list[tuple[float, float]],
) -> dict[str, object]:
    """The trace summed up: latency, each operator's calls (wall beside CPU, and wall
    while a helper thread merged or not), helper-thread work, and the slowest batches
    with what overlapped them."""
    from dataflare_platform.bench.nexmark import WARMUP_BATCHES

    start = recorded[0][0] - recorded[0][1] / 1000 if recorded else 0.0
    latencies = [ms / 1000 for _, ms in recorded[WARMUP_BATCHES:]]
    pushes = [c for c in calls if c.what not in ("merge", "store_filter")]
    helpers = [c for c in calls if c.what in ("merge", "store_filter")]
    batch_thread = pushes[0].thread if pushes else threading.main_thread().name
    background = [c for c in helpers if c.thread != batch_thread]
    operators: dict[str, dict] = {}
    for name in dict.fromkeys(c.what for c in pushes):
        mine = [c for c in pushes if c.what == name]
        during = [c for c in mine if any(h.start < c.end and h.end > c.start for h in background)]
        alone = [c for c in mine if c not in during]
        operators[name] = {
            "calls": len(mine),
            "wall": _percentiles([c.wall for c in mine]),
            "cpu": _percentiles([c.cpu for c in mine]),
            "wall_while_a_helper_merges": _percentiles([c.wall for c in during]),
            "wall_otherwise": _percentiles([c.wall for c in alone]),
            "calls_while_a_helper_merges": len(during),
        }

    def helper_summary(kind: str, inline: bool) -> dict[str, object]:
        mine = [c for c in helpers if c.what == kind and (c.thread == batch_thread) == inline]
        return {
            "count": len(mine),
            "rows": sum(c.rows for c in mine),
            "wall_s": round(sum(c.wall for c in mine), 3),
            "cpu_s": round(sum(c.cpu for c in mine), 3),
            "longest_ms": round(max((c.wall for c in mine), default=0.0) * 1000, 2),
        }

    slowest = sorted(recorded[WARMUP_BATCHES:], key=lambda r: -r[1])[:SLOWEST]
    slow = []
    for at, ms in slowest:
        began = at - ms / 1000
        overlapping = [
            {
                "what": c.what,
                "thread": c.thread,
                "start_ms": round((c.start - began) * 1000, 2),
                "wall_ms": round(c.wall * 1000, 2),
                "cpu_ms": round(c.cpu * 1000, 2),
                **({"rows": c.rows} if c.rows else {}),
            }
            for c in calls
            if c.start < at and c.end > began and c.wall * 1000 >= 1.0
        ]
        slow.append(
            {"at_s": round(began - start, 3), "latency_ms": round(ms, 2), "calls": overlapping}
        )
    return {
        "benchmark": "batch_trace",
        "query": query,
        "batch_rows": batch_rows,
        "rate": rate,
        "ttl": ttl,
        "seconds": round(seconds, 4),
        "latency": {
            **_percentiles(latencies),
            "batches": len(recorded),
            "warmup_batches": WARMUP_BATCHES,
        },
        "operators": operators,
        "merges_inline": helper_summary("merge", True),
        "merges_on_helpers": helper_summary("merge", False),
        "store_filters_inline": helper_summary("store_filter", True),
        "store_filters_on_helpers": helper_summary("store_filter", False),
        "slowest": slow,
        "machine": machine(),
    }
