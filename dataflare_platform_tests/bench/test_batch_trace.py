"""``dataflare bench nexmark-trace``: one engine run with operator calls, keyed-store merges
and store-filter builds timed, and the slowest batches with what overlapped them."""

from __future__ import annotations

import json
import time

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
        Call("1:KeyedTopN", "batch", 0.000, 0.004, 0.003),
        Call("1:KeyedTopN", "batch", 0.010, 0.012, 0.004),  # a helper merges meanwhile
        Call("merge", "keyed-merge_0", 0.012, 0.050, 0.040, rows=300_000),
        Call("1:KeyedTopN", "batch", 0.070, 0.005, 0.004),
        Call("merge", "batch", 0.071, 0.002, 0.002, rows=20_000),  # inline
        Call("store_filter", "keyed-merge-small_0", 0.100, 0.010, 0.010, rows=1_000_000),
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


def test_nested_calls_are_timed_without_the_calls_inside_them():
    """An operator's ``_push`` runs the next operator's inside it: each call's wall and
    CPU are its own, its span the whole."""
    from dataflare_platform.bench.batch_trace import _timed

    calls: list[Call] = []

    def outer(depth: int) -> None:
        busy = time.thread_time() + 0.01
        while time.thread_time() < busy:
            pass
        if depth:
            timed(depth - 1)

    timed = _timed(calls, lambda depth: f"level{depth}", outer)
    timed(1)
    inner, whole = calls  # the inner call finishes first
    assert (inner.what, whole.what) == ("level0", "level1")
    assert 0.005 < whole.cpu < 0.015 and 0.005 < inner.cpu < 0.015
    assert whole.span >= inner.span + whole.wall - 0.001
    assert whole.end >= inner.end
