"""The console templates shipped in deployments/observe, served by a real Prometheus
(Debian's package) scraping ``dataflare metrics serve`` while a real pipeline (with a
real WASM plugin rejecting some batches) runs and the Dagster instance exporter reads a
real instance; each console is opened in headless Chromium, its graphs and tables must
show the expected series (not an error), and a screenshot is saved under
test-artifacts/ui/observe-*.png."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse
import urllib.request
from datetime import timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.remote_origin import RemoteInstigatorOrigin
from dagster._core.scheduler.instigation import InstigatorState, InstigatorStatus, TickStatus
from dagster._daemon.types import DaemonHeartbeat

from dataflare_platform import observability
from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, Stream, TableSource
from dataflare_platform.instance.exporter import InstanceExporter, freshness_policies
from dataflare_platform.plugins import Plugin
from dataflare_platform_tests.browser import DevToolsChromium, chromium_binary
from dataflare_platform_tests.conftest import REPO_ROOT
from dataflare_platform_tests.instance.test_exporter import _repository, _tick
from dataflare_platform_tests.observability.prometheus_server import (
    requires_prometheus,
    running_prometheus,
)
from dataflare_platform_tests.observability.test_prometheus_e2e import endpoint
from dataflare_platform_tests.plugins.hostile import MANIFEST, OK, TRAP, module

__all__ = ["endpoint"]

pytestmark = [pytest.mark.e2e, requires_prometheus]

OBSERVE = REPO_ROOT / "deployments" / "observe"
ARTIFACTS = Path(os.environ.get("DATAFLARE_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts")) / "ui"
PIPELINE = "bids_enriched"


@dg.asset(freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=1)))
def daily_revenue() -> None:
    pass


@dg.asset(freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=5)))
def late_report() -> None:
    pass


@dg.op
def fine() -> None:
    pass


@dg.op
def breaks() -> None:
    raise RuntimeError("boom")


@dg.job
def nightly() -> None:
    fine()


@dg.job
def flaky() -> None:
    breaks()


def _stream(cache_dir: Path) -> threading.Thread:
    """A paced pipeline (a few seconds of scrapes) whose plugin traps on 2 batches of 30:
    records in/out, lag, latency, watermark and dead letters all get values."""
    n = 3_000
    start = int(time.time() * 1000) - n * 10
    x = np.full(n, 7, dtype=np.int64)
    x[0::100] = OK
    x[500] = TRAP
    x[1_700] = TRAP
    table = pa.table(
        {
            "x": pa.array(x),
            # Event time up to now, so the watermark lag reads like a live stream's.
            "date_time": pa.array(np.arange(n, dtype=np.int64) * 10 + start).cast(
                pa.timestamp("ms")
            ),
        }
    )
    plugin = Plugin(MANIFEST, module(), pool_size=1, cache_dir=cache_dir)
    pipeline = (
        Stream.source(TableSource.single("bids", table), name=PIPELINE)
        .plugin(plugin)
        .sink(CollectSink())
    )
    runner = Runner(pipeline, RunnerConfig(batch_rows=100, rate=500, checkpoint_every=2))
    thread = threading.Thread(target=runner.run, name="pipeline")
    thread.start()
    return thread


def _orchestrator(instance: dg.DagsterInstance) -> None:
    """Runs that succeed and fail, a fresh asset (and one never built), a sensor tick and
    a daemon heartbeat, all in the project home's real instance."""
    state = InstigatorState(
        RemoteInstigatorOrigin(_repository(), "offsets_sensor"),
        InstigatorType.SENSOR,
        InstigatorStatus.RUNNING,
    )
    instance.add_instigator_state(state)
    _tick(instance, state, TickStatus.SUCCESS, time.time())
    dg.materialize([daily_revenue], instance=instance)
    nightly.execute_in_process(instance=instance)
    nightly.execute_in_process(instance=instance)
    flaky.execute_in_process(instance=instance, raise_on_error=False)
    instance.add_daemon_heartbeat(
        DaemonHeartbeat(timestamp=time.time(), daemon_type="SENSOR", daemon_id="d", errors=[])
    )


def _console(prom_url: str, page: str) -> str:
    with urllib.request.urlopen(f"{prom_url}/consoles/{page}", timeout=30) as r:
        assert r.status == 200
        return r.read().decode()


GRAPH_STATE = """(() => {
  const out = {};
  for (const div of document.querySelectorAll('div.df_graph')) {
    out[div.id] = {
      error: [...div.querySelectorAll('.prom_graph_error')].map(e => e.textContent),
      svg: !!div.querySelector('svg path'),
      legend: [...div.querySelectorAll('.rickshaw_legend .label')].map(l => l.textContent),
    };
  }
  return JSON.stringify(out);
})()"""


# The consoles' time control reads its range from the URL: the last 2 minutes.
LAST_2_MINUTES = "#pctc" + urllib.parse.quote(json.dumps({"duration": 120, "endTime": 0}))


def _open(browser: DevToolsChromium, url: str, graphs: int) -> dict:
    """Navigate and wait until every graph has rendered (an svg) or reported an error."""
    browser.call("Page.navigate", url=url + LAST_2_MINUTES)
    browser.wait_for(
        "document.readyState === 'complete' &&"
        f" document.querySelectorAll('div.df_graph').length === {graphs} &&"
        " [...document.querySelectorAll('div.df_graph')].every(d =>"
        " d.querySelector('svg path') || d.querySelector('.prom_graph_error'))"
    )
    return json.loads(browser.js(GRAPH_STATE))


def test_consoles_show_the_stream_and_orchestrator_series(home, metrics_dir, endpoint, tmp_path):
    target = endpoint.removeprefix("http://").removesuffix("/metrics")
    flags = [
        f"--web.console.templates={OBSERVE / 'consoles'}",
        f"--web.console.libraries={OBSERVE / 'console_libraries'}",
    ]
    stop = threading.Event()
    with (
        dg.DagsterInstance.from_config(str(home.dagster_home)) as instance,
        running_prometheus(tmp_path / "prometheus", [target], flags) as prom,
    ):
        prom.wait_for('up{job="dataflare"}', lambda v: v == 1)
        exporter = InstanceExporter(
            instance,
            observability.instruments(),
            freshness_policies(dg.Definitions(assets=[daily_revenue, late_report])),
        )
        _orchestrator(instance)
        collecting = threading.Thread(target=exporter.run_forever, args=(0.5, stop))
        collecting.start()
        try:
            _stream(tmp_path / "plugin-cache").join(300)
            sel = f'{{pipeline="{PIPELINE}"}}'
            prom.wait_for(f"dataflare_engine_records_in_total{sel}", lambda v: v == 3_000)
            prom.wait_for(f"sum(dataflare_engine_dead_letters_total{sel})", lambda v: v == 200)
            prom.wait_for('dataflare_dagster_asset_fresh{asset="late_report"}', lambda v: v == 0)
            # Enough samples after the run for every rate() over 1m to have two points.
            prom.wait_for(
                f"count_over_time(dataflare_engine_records_in_total{sel}[1m])",
                lambda v: v is not None and v >= 5,
            )

            streams = _console(prom.url, "dataflare-streams.html")
            assert f'data-pipeline="{PIPELINE}"' in streams
            orchestrator = _console(prom.url, "dataflare-orchestrator.html")
            assert 'data-asset="daily_revenue"' in orchestrator
            assert 'data-asset="late_report"' in orchestrator
            assert "error executing template" not in streams + orchestrator

            browser = DevToolsChromium(chromium_binary(), tmp_path / "chromium", "1400,2200")
            try:
                browser.call("Page.enable")
                graphs = _open(browser, f"{prom.url}/consoles/dataflare-streams.html", 5)
                for name, state in graphs.items():
                    assert state["svg"] and not state["error"], (name, state)
                    assert any(PIPELINE in label for label in state["legend"]), (name, state)
                assert {f"p50 {PIPELINE}", f"p99 {PIPELINE}"} <= set(graphs["latency"]["legend"])
                assert any("batch_rejected" in label for label in graphs["deadletters"]["legend"])
                row = browser.js(
                    f"document.querySelector('tr[data-pipeline=\"{PIPELINE}\"]').innerText"
                )
                assert "3k" in row or "3000" in row, row
                browser.screenshot(ARTIFACTS / "observe-streams.png")

                graphs = _open(browser, f"{prom.url}/consoles/dataflare-orchestrator.html", 6)
                for name, state in graphs.items():
                    assert state["svg"] and not state["error"], (name, state)
                assert {"SUCCESS", "FAILURE"} <= set(graphs["outcomes"]["legend"])
                assert "SENSOR" in graphs["heartbeats"]["legend"]
                assert "late_report" in graphs["freshness"]["legend"]
                assert "offsets_sensor" in graphs["ticks"]["legend"]
                fresh = browser.js(
                    "document.querySelector('tr[data-asset=\"daily_revenue\"]').innerText"
                )
                stale = browser.js(
                    "document.querySelector('tr[data-asset=\"late_report\"]').innerText"
                )
                assert "yes" in fresh and "1h" in fresh, fresh
                assert "NO" in stale and "never" in stale, stale
                browser.screenshot(ARTIFACTS / "observe-orchestrator.png")

                browser.call("Page.navigate", url=f"{prom.url}/consoles/index.html")
                browser.wait_for("!!document.querySelector('#df_targets')")
                assert "dataflare" in browser.js("document.querySelector('#df_targets').innerText")
                browser.screenshot(ARTIFACTS / "observe-index.png")
            finally:
                browser.close()
        finally:
            stop.set()
            collecting.join(60)
