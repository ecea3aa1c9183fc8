"""A Grafana dashboard generated from the metric list, for production users.

Generated rather than drawn, so it cannot drift from ``catalog.METRICS``: every metric
gets a panel in the row of its subsystem (or is listed in :data:`EXCLUDED` with the
reason), with the query its type calls for:

- counter: the per-second rate, summed by its labels (``*_seconds_total``: a fraction
  of time, e.g. busy or back-pressured);
- gauge: the value, by its labels (summed for ``livesum`` gauges, else the max over the
  worker processes that report it);
- histogram: p50 and p99 from the bounded buckets.

Metrics with a ``pipeline`` label are filtered by the dashboard's ``$pipeline``
variable; the data source is the ``$datasource`` variable, so the file imports into any
Grafana with a Prometheus data source. ``dataflare metrics grafana`` prints it;
deployments/observe/grafana/dataflare.json is that output (a golden test holds them equal).
"""

from __future__ import annotations

import json
from typing import Any

from dataflare_platform.observability.catalog import METRICS, MetricSpec

UID = "dataflare-platform"
TITLE = "DataFlare Platform"

# Metrics deliberately without a panel, and why (a test holds every other metric to a
# panel).
EXCLUDED: dict[str, str] = {}

# Rows in dashboard order: (title, name prefixes). A metric goes to the first row one of
# whose prefixes it starts with; the last row takes the rest.
ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Streams", ("dataflare_engine_", "dataflare_sink_")),
    ("Sources and operators", ("dataflare_source_", "dataflare_operator_")),
    ("Plugins", ("dataflare_plugin_",)),
    ("Event log", ("dataflare_log_",)),
    ("Connectors", ("dataflare_connector_",)),
    ("Governance", ("dataflare_quality_", "dataflare_audit_", "dataflare_alerts_")),
    ("Orchestrator (Dagster)", ("dataflare_dagster_",)),
    ("Other", ("",)),
)

_WIDTH, _HEIGHT = 12, 8  # half the 24-column grid per panel


def _row_of(spec: MetricSpec) -> str:
    return next(title for title, prefixes in ROWS if spec.name.startswith(prefixes))


def _selector(spec: MetricSpec) -> str:
    return '{pipeline=~"$pipeline"}' if "pipeline" in spec.labels else ""


def _by(labels: tuple[str, ...], *more: str) -> str:
    names = [*labels, *more]
    return f" by ({', '.join(names)})" if names else ""


def _legend(spec: MetricSpec, prefix: str = "") -> str:
    text = " ".join("{{" + label + "}}" for label in spec.labels)
    return (prefix + " " + text).strip() or spec.name


def _unit(spec: MetricSpec) -> str:
    if spec.kind == "counter":
        return "percentunit" if spec.unit == "s" else "cps"
    return {"s": "s", "By": "bytes"}.get(spec.unit, "short")


def targets(spec: MetricSpec) -> list[dict[str, str]]:
    """The PromQL of a metric's panel, one target per line drawn."""
    sel = _selector(spec)
    if spec.kind == "counter":
        expr = f"sum{_by(spec.labels)} (rate({spec.name}{sel}[$__rate_interval]))"
        return [{"expr": expr, "legendFormat": _legend(spec), "refId": "A"}]
    if spec.kind == "gauge":
        agg = "sum" if spec.multiprocess_mode == "livesum" else "max"
        expr = f"{agg}{_by(spec.labels)} ({spec.name}{sel})"
        return [{"expr": expr, "legendFormat": _legend(spec), "refId": "A"}]
    out = []
    for ref, q in (("A", "0.5"), ("B", "0.99")):
        rate = f"rate({spec.name}_bucket{sel}[$__rate_interval])"
        expr = f"histogram_quantile({q}, sum{_by(spec.labels, 'le')} ({rate}))"
        label = "p50" if q == "0.5" else "p99"
        out.append({"expr": expr, "legendFormat": _legend(spec, label), "refId": ref})
    return out


def _panel(spec: MetricSpec, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": spec.name,
        "description": spec.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": _HEIGHT, "w": _WIDTH, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": _unit(spec)}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {**t, "datasource": {"type": "prometheus", "uid": "${datasource}"}}
            for t in targets(spec)
        ],
    }


def dashboard() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (importable as is)."""
    by_row: dict[str, list[MetricSpec]] = {title: [] for title, _ in ROWS}
    for spec in METRICS:
        if spec.name not in EXCLUDED:
            by_row[_row_of(spec)].append(spec)
    panels: list[dict[str, Any]] = []
    y = 0
    for title, specs in by_row.items():
        if not specs:
            continue
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        for i, spec in enumerate(specs):
            x = (i % 2) * _WIDTH
            panels.append(_panel(spec, len(panels) + 1, x, y))
            if x:
                y += _HEIGHT
        if len(specs) % 2:
            y += _HEIGHT
    return {
        "uid": UID,
        "title": TITLE,
        "description": "Generated by `dataflare metrics grafana` from the platform's metric"
        " list (docs/observability.md); regenerate rather than edit.",
        "tags": ["dataflare"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "pipeline",
                    "label": "Pipeline",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "definition": "label_values(dataflare_engine_records_in_total, pipeline)",
                    "query": {
                        "query": "label_values(dataflare_engine_records_in_total, pipeline)",
                        "refId": "pipeline",
                    },
                    "includeAll": True,
                    "allValue": ".*",
                    "multi": True,
                    "refresh": 2,
                    "sort": 1,
                    "current": {},
                    "hide": 0,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def dashboard_json() -> str:
    """The file's exact text (stable: the golden test compares it byte for byte)."""
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"
