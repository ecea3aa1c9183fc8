"""The Markdown table of docs/benchmarks.md from ``dataflare bench nexmark`` JSON lines,
so the published numbers are the printed ones, not retyped:

    for q in q0 ... q22; do dataflare bench nexmark --query $q ... ; done > runs.jsonl
    python -m dataflare_platform.bench.report_table < runs.jsonl
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable

COLUMNS = (
    "query",
    "events",
    "events/s",
    "DuckDB events/s",
    "ratio",
    "p50 ms",
    "p99 ms",
    "first commit s",
    "first-20 p99 ms",
    "peak RSS MB",
)


def _millions(value: float | None) -> str:
    return "–" if value is None else f"{value / 1e6:.2f} M"


def row(report: dict) -> str:
    """One table row of one run's report."""
    cold = report.get("cold_start") or {}
    name = report["query"] + (f" (ttl {report['ttl']})" if report.get("ttl") else "")
    cells = [
        name,
        _millions(report["events"]),
        _millions(report["events_per_s"]),
        _millions(report.get("baseline_events_per_s")),
        "–" if report.get("ratio") is None else f"{report['ratio']:.2f}",
        f"{report['p50_ms']:.1f}",
        f"{report['p99_ms']:.1f}",
        f"{cold.get('first_commit_s', 0):.2f}",
        f"{cold.get('first_20_batches_p99_ms', 0):.1f}",
        f"{report['peak_rss_mb']:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def table(lines: Iterable[str]) -> str:
    reports = [json.loads(line) for line in lines if line.strip().startswith("{")]
    head = "| " + " | ".join(COLUMNS) + " |"
    rule = "| --- |" + " ---: |" * (len(COLUMNS) - 1)
    return "\n".join([head, rule, *(row(r) for r in reports)])


if __name__ == "__main__":
    print(table(sys.stdin))
