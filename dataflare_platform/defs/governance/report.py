"""The daily compliance report as a partitioned asset: for one UTC day, every check run
and its result per asset, PII findings, retention deletions, the audit chain's status and
the open and escalated alerts, gathered from the Dagster instance and the governance
stores and written as a self-contained HTML page and JSON (linked from the metadata)."""

from datetime import UTC, datetime, time, timedelta

import dagster as dg
from dagster import AssetRecordsFilter, RunStatusChangeRecordsFilter

from dataflare_platform.compliance.report import (
    AlertRecord,
    AssetCompliance,
    AuditStatus,
    CheckRecord,
    ComplianceSnapshot,
    PiiRecord,
    RetentionRecord,
    headlines,
    write_report,
)
from dataflare_platform.defs.governance.audit import RETENTION_ACTIONS
from dataflare_platform.defs.governance.event_feed import (
    RUN_ENDS,
    asset_path,
    check_evaluations,
)
from dataflare_platform.defs.governance.resources import GovernanceResource
from dataflare_platform.defs.governance.retention import RETENTION_KEY

REPORT_KEY = dg.AssetKey(["governance", "compliance_report"])
# Today is a partition too (end_offset=1): an interim report of the day so far can be
# compiled on demand; the schedule compiles each day once it has ended.
daily = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC", end_offset=1)


def _runs_ended(instance: dg.DagsterInstance, start: datetime, end: datetime) -> list[str]:
    runs: list[str] = []
    for kind in RUN_ENDS:
        cursor = None
        while True:
            result = instance.fetch_run_status_changes(
                RunStatusChangeRecordsFilter(
                    kind, after_timestamp=start.timestamp(), before_timestamp=end.timestamp()
                ),
                limit=1000,
                cursor=cursor,
            )
            runs += [r.event_log_entry.run_id for r in result.records]
            cursor = result.cursor
            if not result.has_more:
                break
    return runs


def gather(
    instance: dg.DagsterInstance, governance: GovernanceResource, day, now: datetime
) -> ComplianceSnapshot:
    start = datetime.combine(day, time(), UTC)
    end = start + timedelta(days=1)
    assets: dict[str, AssetCompliance] = {}

    def asset(name: str) -> AssetCompliance:
        return assets.setdefault(name, AssetCompliance(asset=name))

    for run_id in _runs_ended(instance, start, end):
        for item in check_evaluations(instance, run_id):
            evaluation = item.event.dagster_event.event_specific_data
            name = asset_path(evaluation.asset_key) or "?"
            severity = evaluation.severity.value.lower() if evaluation.severity else "error"
            asset(name).checks.append(
                CheckRecord(
                    name=evaluation.check_name,
                    severity=severity,
                    passed=evaluation.passed,
                    description=(evaluation.description or "")[:500],
                    at=item.timestamp,
                )
            )
            detail = (evaluation.metadata or {}).get("findings_detail")
            for finding in getattr(detail, "value", None) or []:
                asset(name).pii.append(
                    PiiRecord(
                        column=finding["column"],
                        kind=finding["kind"],
                        rows=finding["rows"],
                        samples=finding.get("samples_redacted", []),
                        classification=finding.get("classification"),
                    )
                )
    deletions = instance.fetch_materializations(
        AssetRecordsFilter(
            asset_key=RETENTION_KEY,
            after_timestamp=start.timestamp(),
            before_timestamp=end.timestamp(),
        ),
        limit=100,
    )
    for record in deletions.records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        for action in getattr(metadata.get(RETENTION_ACTIONS), "value", None) or []:
            asset(str(action.get("dataset"))).retention.append(RetentionRecord.from_audit(action))

    with governance.audit_log() as log:
        audit = AuditStatus.from_report(log.verify(governance.public_keys()))
    alerts: list[AlertRecord] = []
    manager = governance.alert_manager()
    if manager is not None:
        try:
            alerts = [AlertRecord.from_alert(a) for a in manager.alerts() if a.status != "resolved"]
        finally:
            manager.close()
    return ComplianceSnapshot(
        day=day,
        generated_at=now,
        assets=sorted(assets.values(), key=lambda a: a.asset),
        audit=audit,
        alerts=alerts,
    )


@dg.asset(
    key=REPORT_KEY,
    partitions_def=daily,
    group_name="governance",
    kinds={"html", "json"},
    owners=["team:compliance"],
    description=(
        "One UTC day of governance: checks run and failed per asset, PII findings, "
        "retention deletions, audit chain status, open and escalated alerts (HTML + JSON)."
    ),
)
def compliance_report(
    context: dg.AssetExecutionContext, governance: GovernanceResource
) -> dg.MaterializeResult:
    day = context.partition_time_window.start.date()
    snapshot = gather(context.instance, governance, day, datetime.now(UTC))
    html_path, json_path = write_report(snapshot, governance.root / "reports")
    for line in headlines(snapshot):
        context.log.info(line)
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.path(str(html_path)),
            "json": dg.MetadataValue.path(str(json_path)),
            "checks_run": snapshot.checks_run,
            "checks_failed": snapshot.checks_failed,
            "pii_findings": snapshot.pii_findings,
            "open_alerts": len(snapshot.open_alerts),
            "audit_ok": bool(snapshot.audit and snapshot.audit.ok),
            "summary": dg.MetadataValue.md("\n".join(f"- {h}" for h in headlines(snapshot))),
        }
    )


report_job = dg.define_asset_job(
    "compliance_report_job",
    selection=[REPORT_KEY],
    description="Compile one day's compliance report.",
)


@dg.schedule(
    name="compliance_report_schedule",
    job=report_job,
    cron_schedule="0 1 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at 01:00 UTC, the report of the day that just ended.",
)
def report_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = (context.scheduled_execution_time - timedelta(days=1)).strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"compliance-report:{day}", partition_key=day)


report_definitions = dg.Definitions(
    assets=[compliance_report], jobs=[report_job], schedules=[report_schedule]
)
