"""``dataflare bench nexmark-trace``: one engine run with operator calls, keyed-store merges
and store-filter builds timed, and the slowest batches with what overlapped them."""

from __future__ import annotations

import json
from types import SimpleNamespace

from click.testing import CliRunner
from typer.main import get_command

from dataflare_platform.bench.batch_trace import Call, report
from dataflare_platform.cli import app
from dataflare_platform.datagen import NexmarkConfig, write_nexmark
from dataflare_platform_tests.measured import measured


def test_a_traced_q19_run_counts_every_call_and_lists_its_slowest_batches(tmp_path):
    data = tmp_path / "nexmark"
    write_nexmark(NexmarkConfig(events=60_000, events_per_second=1_000.0), data)
    result = CliRunner().invoke(
        get_command(app),
        [
            "bench", "nexmark-trace", "--query", "q19", "--input", str(data / "bids"),
            "--batch-rows", "500", "--rate", "0",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["benchmark"] == "batch_trace" and out["query"] == "q19" and out["rate"] is None
    (name,) = [n for n in out["operators"] if n.endswith(":KeyedTopN")]
    top = out["operators"][name]
    bids = sum(1 for _ in (data / "bids").iterdir())  # files: at least one batch each
    assert top["calls"] >= max(bids, 60_000 * 0.9 // 500)
    assert measured(top["wall"]["p50_ms"]) and measured(top["cpu"]["p50_ms"])
    assert top["calls_while_a_helper_merges"] <= top["calls"]
    # The store grew past its first filter and merged its segments as it went.
    filters = out["store_filters_inline"]["count"] + out["store_filters_on_helpers"]["count"]
    assert filters >= 2
    merges = out["merges_inline"]["count"] + out["merges_on_helpers"]["count"]
    assert merges > 0 and out["merges_inline"]["rows"] > 0
    # One latency per source batch (the null sink records each batch as written), and
    # only those: the operators' per-call CPU histograms are not mixed in.
    assert out["latency"]["batches"] == top["calls"]
    assert measured(out["latency"]["p99_ms"])
    slowest = [s["latency_ms"] for s in out["slowest"]]
    assert 0 < len(slowest) <= 10 and slowest == sorted(slowest, reverse=True)
    assert abs(slowest[0] - out["latency"]["max_ms"]) <= 0.01


def test_calls_are_split_by_whether_a_helper_thread_merged_meanwhile():
    """An operator call overlapping a merge on another thread counts as "while a helper
    merges"; one overlapping only a merge on the batch thread itself does not."""
    calls = [
        Call("1:KeyedTopN", "batch", 0.000, 0.004, 0.003, 0.004),
        Call("1:KeyedTopN", "batch", 0.010, 0.012, 0.004, 0.012),  # a helper merges meanwhile
        Call("merge", "keyed-merge_0", 0.012, 0.050, 0.040, 0.050, rows=300_000),
        Call("1:KeyedTopN", "batch", 0.070, 0.005, 0.004, 0.005),
        Call("merge", "batch", 0.071, 0.002, 0.002, 0.002, rows=20_000),  # inline
        Call("store_filter", "keyed-merge-small_0", 0.100, 0.010, 0.010, 0.010, rows=1_000_000),
    ]
    recorded = [(0.005, 5.0), (0.023, 13.0), (0.076, 6.0)]
    out = report("q19", 10_000, 1e6, None, 0.1, calls, recorded)
    top = out["operators"]["1:KeyedTopN"]
    assert top["calls"] == 3 and top["calls_while_a_helper_merges"] == 1
    assert top["wall_while_a_helper_merges"]["max_ms"] == 12.0
    assert top["wall_otherwise"]["max_ms"] == 5.0
    assert out["merges_on_helpers"] == {
        "count": 1, "rows": 300_000, "wall_s": 0.05, "cpu_s": 0.04, "longest_ms": 50.0,
    }  # fmt: skip
    assert out["merges_inline"]["count"] == 1 and out["merges_inline"]["rows"] == 20_000
    assert out["store_filters_on_helpers"]["rows"] == 1_000_000


def test_nested_calls_are_timed_without_the_calls_inside_them(monkeypatch):
    """An operator's ``_push`` runs the next operator's inside it: each call's wall and
    CPU are its own, its span the whole. The clocks are the test's: the outer call spends
    3 s of wall (2 s of CPU) before the inner one, which spends 5 s (4 s), and 1 s (1 s)
    after it."""
    from dataflare_platform.bench import batch_trace

    clock = {"wall": 100.0, "cpu": 10.0}
    monkeypatch.setattr(
        batch_trace,
        "time",
        SimpleNamespace(perf_counter=lambda: clock["wall"], thread_time=lambda: clock["cpu"]),
    )

    def spend(wall: float, cpu: float) -> None:
        clock["wall"] += wall
        clock["cpu"] += cpu

    def call(depth: int) -> None:
        if depth:
            spend(3.0, 2.0)
            timed(depth - 1)
            spend(1.0, 1.0)
        else:
            spend(5.0, 4.0)

    calls: list[Call] = []
    timed = batch_trace._timed(calls, lambda depth: f"level{depth}", call)
    timed(1)
    inner, whole = calls  # the inner call finishes first
    assert (inner.what, inner.start, inner.wall, inner.cpu, inner.span) == (
        "level0", 103.0, 5.0, 4.0, 5.0,
    )  # fmt: skip
    assert (whole.what, whole.start, whole.wall, whole.cpu, whole.span) == (
        "level1", 100.0, 4.0, 3.0, 9.0,
    )  # fmt: skip
    assert whole.end == 109.0 and inner.end == 108.0
