"""The benchmark table is made from the JSON the benchmark printed."""

from dataflare_platform.bench.report_table import table

REPORT = (
    '{"query": "q19", "ttl": "60s", "events": 9200000, "events_per_s": 4600000,'
    ' "baseline_events_per_s": 9200000, "ratio": 0.5, "p50_ms": 1.25, "p99_ms": 3.0,'
    ' "peak_rss_mb": 612.4, "cold_start": {"first_commit_s": 2.5,'
    ' "first_20_batches_p99_ms": 9.06}}'
)


def test_one_row_per_report_with_its_numbers():
    lines = table(["not json", REPORT, REPORT.replace('"ratio": 0.5', '"ratio": null')])
    head, rule, first, paced = lines.splitlines()
    assert head.count("|") == rule.count("|") == first.count("|") == 11
    assert first == (
        "| q19 (ttl 60s) | 9.20 M | 4.60 M | 9.20 M | 0.50 | 1.2 | 3.0 | 2.50 | 9.1 | 612 |"
    )
    assert "| – |" in paced  # a paced run has no ratio
