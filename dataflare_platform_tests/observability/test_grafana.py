"""The Grafana dashboard is generated from the metric list: the committed file equals a
fresh generation, every metric has a panel (or a reason for none), and real Prometheus
accepts every panel's query."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from dataflare_platform.observability.catalog import METRICS
from dataflare_platform.observability.grafana import EXCLUDED, dashboard, dashboard_json
from dataflare_platform_tests.conftest import REPO_ROOT
from dataflare_platform_tests.observability.prometheus_server import (
    requires_prometheus,
    running_prometheus,
)

GOLDEN = REPO_ROOT / "deployments" / "observe" / "grafana" / "dataflare.json"


def _exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_the_committed_dashboard_is_the_generated_one():
    assert GOLDEN.read_text() == dashboard_json(), (
        "regenerate it: dataflare metrics grafana > deployments/observe/grafana/dataflare.json"
    )


def test_the_cli_prints_the_same_dashboard():
    out = subprocess.run(
        [sys.executable, "-m", "dataflare_platform.cli", "metrics", "grafana"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert out == dashboard_json()


def test_every_metric_has_a_panel_or_a_reason():
    queried = set()
    for expr in _exprs():
        for found in re.findall(r"\bdataflare_[a-z0-9_]+", expr):
            queried.add(found.removesuffix("_bucket"))
    names = {m.name for m in METRICS}
    assert queried <= names, f"panels query metrics the list does not have: {queried - names}"
    assert set(EXCLUDED) <= names, "EXCLUDED names a metric the list does not have"
    for name, reason in EXCLUDED.items():
        assert reason.strip(), f"{name}: excluded without a reason"
        assert name not in queried, f"{name} is excluded but has a panel"
    missing = names - queried - set(EXCLUDED)
    assert not missing, f"no panel and no reason in EXCLUDED: {sorted(missing)}"


def test_panels_do_not_overlap_and_ids_are_unique():
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for p in panels:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))
    json.dumps(dashboard())  # plain JSON all the way down


@pytest.mark.e2e
@requires_prometheus
def test_real_prometheus_accepts_every_panel_query(tmp_path):
    """Grafana substitutes $__rate_interval and $pipeline; with those as Grafana would
    fill them, Prometheus parses and evaluates every query."""
    with running_prometheus(tmp_path / "prometheus", []) as prom:
        for expr in _exprs():
            concrete = expr.replace("$__rate_interval", "1m").replace("$pipeline", ".*")
            assert prom.query(concrete) == [], concrete  # no data, but valid PromQL
