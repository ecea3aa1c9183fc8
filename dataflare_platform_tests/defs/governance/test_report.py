"""The daily compliance report compiled from a real instance and the governance stores,
after planted failures: a PII leak, a failed GX-like check, a retention deletion, a
tampered audit chain and an escalated alert — its text (as Chromium renders it) states
those numbers."""

import re
import sqlite3
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


def days_of(instance: dg.DagsterInstance, run_ids: list[str]) -> list[str]:
    """The UTC days on which the planted runs' events were stamped, oldest first. The
    report's window is a day of the instance's own timestamps, so a scenario that runs
    across midnight (the CI of 2026-12-05 collected this module at 23:4x and ran it at
    00:07) is split over two partitions; the test then reports both and adds them up."""
    stamps = [e.timestamp for run_id in run_ids for e in instance.all_logs(run_id)]
    return sorted({datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d") for t in stamps})


def number(pattern: str, text: str) -> tuple[int, ...]:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in the report"
    return tuple(int(g) for g in found.groups())


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
    planted = dg.materialize(
        [contacts, pii_check(KEY, SPEC)],
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )
    retention = defs.resolve_assets_def(dg.AssetKey(["governance", "retention"]))
    deleted = dg.materialize([retention], instance=instance)
    assert deleted.success

    for name in ("audit_trail", "governance_alerts"):
        with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
            defs.resolve_sensor_def(name)(ctx)
    assert len(http_receiver.bodies("/hook")) == 1
    with sqlite3.connect(home.root / "audit.db") as conn:
        conn.execute("UPDATE audit_entries SET subject = 'forged' WHERE seq = 2")

    report = defs.resolve_assets_def(REPORT_KEY)
    days = days_of(instance, [planted.run_id, deleted.run_id])
    assert 1 <= len(days) <= 2, days
    metas, doms = [], []
    for day in days:
        result = dg.materialize([report], instance=instance, partition_key=day)
        (mat,) = result.get_asset_materialization_events()
        metas.append(mat.materialization.metadata)
        html = metas[-1]["report"].value
        doms.append(
            run_chromium(
                chromium_binary(), tmp_path / f"profile-{day}", f"file://{html}", "--dump-dom"
            )
        )
    assert sum(m["checks_failed"].value for m in metas) == 2
    assert sum(m["pii_findings"].value for m in metas) == 1
    assert all(m["audit_ok"].value is False for m in metas)

    # retention_applied passed
    checks = [number(r"Checks: (\d+) run, (\d+) passed, (\d+) failed", d) for d in doms]
    assert tuple(map(sum, zip(*checks, strict=True))) == (3, 1, 2)
    assert sum(number(r"PII findings: (\d+)", d)[0] for d in doms) == 1
    deletions = [number(r"Retention: (\d+) rows? and (\d+) files? deleted", d) for d in doms]
    assert tuple(map(sum, zip(*deletions, strict=True))) == (2, 0)
    # The audit chain and the alerts are the state when the report is compiled, not a day's.
    assert all("Audit chain: TAMPERED at entry 2" in d for d in doms)
    assert all("Alerts: 1 open, 0 escalated" in d for d in doms)
    assert any("crm/contacts" in d for d in doms)
