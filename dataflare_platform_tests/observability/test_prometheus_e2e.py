"""A real Prometheus scrapes ``dataflare metrics serve`` while a real stream pipeline runs
over the embedded event log; the series and values are read back from its HTTP API."""

from __future__ import annotations

import json
import subprocess
import sys

import duckdb
import pytest

from dataflare_platform.engine import RunnerConfig
from dataflare_platform.events.log import EventLog
from dataflare_platform.observability.catalog import LATENCY_BUCKETS_S
from dataflare_platform.streams.continuous import ContinuousRun
from dataflare_platform.streams.ranges import load_specs
from dataflare_platform_tests.observability.prometheus_server import (
    requires_prometheus,
    running_prometheus,
)

pytestmark = [pytest.mark.e2e, requires_prometheus]


@pytest.fixture
def endpoint(metrics_dir):
    """``dataflare metrics serve`` in its own process on a free loopback port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataflare_platform.cli", "metrics", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read().decode()
        served = json.loads(line)
        assert served["dir"] == str(metrics_dir)  # from PROMETHEUS_MULTIPROC_DIR
        yield served["url"]
    finally:
        proc.terminate()
        proc.wait(30)


def test_prometheus_sees_records_out_equal_to_the_output_rows_and_lag_reaching_zero(
    home, small_nexmark, metrics_dir, endpoint, tmp_path
):
    (spec,) = [s for s in load_specs() if s.name == "hot_items"]
    bids = small_nexmark["bids"]
    topic = EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema)
    target = endpoint.removeprefix("http://").removesuffix("/metrics")
    with running_prometheus(tmp_path / "prometheus", [target]) as prom:
        prom.wait_for('up{job="dataflare"}', lambda v: v == 1)
        # Paced, so the backlog (and its lag) lasts several scrapes before it drains.
        config = RunnerConfig(
            batch_rows=100, checkpoint_every=1000, checkpoint_interval_s=0.2, rate=400
        )
        topic.append(bids)
        run = ContinuousRun(
            spec, EventLog(home.event_log_dir), home.root / "streams", config=config
        ).start()
        try:
            for report in run.reports():
                if report.events_in_total == bids.num_rows and report.lag_events == 0:
                    break
        finally:
            assert run.stop(60)
        list(run.reports())
        with duckdb.connect(str(home.root / "streams" / "hot_items.duckdb")) as conn:
            (rows,) = conn.sql("SELECT count(*) FROM hot_items").fetchall()[0]
        assert rows > 0

        sel = '{pipeline="hot_items"}'
        prom.wait_for(f"dataflare_engine_records_in_total{sel}", lambda v: v == bids.num_rows)
        prom.wait_for(f"dataflare_engine_records_out_total{sel}", lambda v: v == rows)
        lag = 'dataflare_source_records_lag{pipeline="hot_items",source="bids",partition="0"}'
        prom.wait_for(lag, lambda v: v == 0)
        # The lag Prometheus saw while the backlog drained (the run was paced over it).
        assert prom.wait_for(f"max_over_time({lag}[10m])", lambda v: v is not None) > 0
        assert prom.value(f"sum(dataflare_engine_dead_letters_total{sel})") is None
        count = prom.wait_for(
            f"dataflare_engine_latency_seconds_count{sel}", lambda v: v is not None and v > 0
        )
        assert count > 0
        # The bounded buckets give Prometheus a p99 of its own (over the whole run): a
        # number inside the buckets' range (histogram_quantile never goes past the highest
        # finite bound), which says Prometheus read our buckets, not how fast the run was.
        p99 = prom.value(f"histogram_quantile(0.99, dataflare_engine_latency_seconds_bucket{sel})")
        assert p99 is not None and 0 < p99 <= LATENCY_BUCKETS_S[-1]
        series = prom.query('{__name__=~"dataflare_.*",pipeline="hot_items"}')
        names = {s["metric"]["__name__"] for s in series}
        assert {
            "dataflare_operator_records_in_total",
            "dataflare_engine_checkpoints_total",
            "dataflare_sink_commit_seconds_count",
            "dataflare_engine_busy_seconds_total",
        } <= names
