"""The daily compliance report compiled from a real instance and the governance stores,
after planted failures: a PII leak, a failed GX-like check, a retention deletion, a
tampered audit chain and an escalated alert — its text (as Chromium renders it) states
those numbers."""

import sqlite3
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import polars as pl
import pytest

from dataflare_platform.compliance.spec import GovernedDataset
from dataflare_platform.defs.governance.alerts import alerting_definitions
from dataflare_platform.defs.governance.audit import audit_definitions
from dataflare_platform.defs.governance.checks import pii_check
from dataflare_platform.defs.governance.report import REPORT_KEY, report_definitions
from dataflare_platform.defs.governance.retention import retention_definitions
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform_tests.browser import chromium_binary, run_chromium

SPEC = GovernedDataset.model_validate(
    {
        "asset": "crm/contacts",
        "data": {"duckdb": {"path": "crm.duckdb", "table": "contacts"}},
        "pii": {"columns": {}, "scan": "all_strings"},
        "retention": {"keep": "30d", "time_column": "updated"},
    }
)
KEY = dg.AssetKey(["crm", "contacts"])


def clear_of_midnight(margin: timedelta = timedelta(minutes=2)) -> datetime:
    """The planted events and the report must fall on one UTC day (the report's
    partition): a run that starts just before midnight waits for the new day. Returns now.
    (The CI of 2026-12-05 collected this module at 23:4x and ran it at 00:07.)"""
    now = datetime.now(UTC)
    tomorrow = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    if tomorrow - now < margin:
        time.sleep((tomorrow - now).total_seconds() + 1)
        now = datetime.now(UTC)
    return now


@dg.asset(key=KEY, check_specs=[dg.AssetCheckSpec("has_rows", asset=KEY)])
def contacts(dataflare: ProjectHomeResource) -> dg.MaterializeResult:
    now = datetime.now(UTC)
    rows = pl.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "notes": ["write to ann@example.com", "ok", "ok", "ok"],
            "updated": [now - timedelta(days=d) for d in (1, 2, 40, 50)],
        }
    )
    with duckdb.connect(str(dataflare.home.root / "crm.duckdb")) as conn:
        conn.register("rows", rows.to_arrow())
        conn.execute("CREATE OR REPLACE TABLE contacts AS SELECT * FROM rows")
    return dg.MaterializeResult(
        check_results=[dg.AssetCheckResult(passed=False, description="stale contacts")]
    )


@pytest.mark.e2e
def test_report_states_the_planted_failures(home, instance, resources, tmp_path, http_receiver):
    started = clear_of_midnight()
    (home.root / "alerts.yaml").write_text(
        f"channels: {{hook: {{type: webhook, url: '{http_receiver.url('/hook')}',"
        " allow_http_loopback: true}}\n"
        "rules: [{name: crm_checks, kind: check_failed, assets: [crm], severity: error,"
        " channels: [hook]}]\n"
    )
    defs = dg.Definitions.merge(
        audit_definitions([], 30),
        alerting_definitions(30),
        retention_definitions([SPEC]),
        report_definitions,
        dg.Definitions(assets=[contacts], asset_checks=[pii_check(KEY, SPEC)], resources=resources),
    )
    dg.materialize(
        [contacts, pii_check(KEY, SPEC)],
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )
    retention = defs.resolve_assets_def(dg.AssetKey(["governance", "retention"]))
    assert dg.materialize([retention], instance=instance).success

    for name in ("audit_trail", "governance_alerts"):
        with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
            defs.resolve_sensor_def(name)(ctx)
    assert len(http_receiver.bodies("/hook")) == 1
    with sqlite3.connect(home.root / "audit.db") as conn:
        conn.execute("UPDATE audit_entries SET subject = 'forged' WHERE seq = 2")

    report = defs.resolve_assets_def(REPORT_KEY)
    day = started.strftime("%Y-%m-%d")
    assert datetime.now(UTC).date() == started.date(), "the scenario crossed midnight"
    result = dg.materialize([report], instance=instance, partition_key=day)
    (mat,) = result.get_asset_materialization_events()
    meta = mat.materialization.metadata
    assert meta["checks_failed"].value == 2 and meta["pii_findings"].value == 1
    assert meta["audit_ok"].value is False

    html = meta["report"].value
    dom = run_chromium(chromium_binary(), tmp_path / "profile", f"file://{html}", "--dump-dom")
    assert "Checks: 3 run, 1 passed, 2 failed" in dom  # retention_applied passed
    assert "PII findings: 1" in dom
    assert "Retention: 2 rows and 0 files deleted" in dom
    assert "Audit chain: TAMPERED at entry 2" in dom
    assert "Alerts: 1 open, 0 escalated" in dom
    assert "crm/contacts" in dom
