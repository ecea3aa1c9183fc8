"""Mapping data-plane quality reports onto Dagster asset check results."""

import json

import dagster as dg

from dataflare_platform.warehouse.quality import QualityReport


def check_result(
    report: QualityReport,
    *,
    asset_key: dg.AssetKey | None = None,
    check_name: str | None = None,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> dg.AssetCheckResult:
    metadata: dict[str, object] = {
        "rows_checked": report.rows_checked,
        "summary": report.describe(),
    }
    for rule, count in report.failures.items():
        metadata[f"failed_rows/{rule}"] = count
    if report.samples:
        metadata["failing_samples"] = dg.MetadataValue.json(
            json.loads(json.dumps(report.samples, default=str))
        )
    return dg.AssetCheckResult(
        passed=report.passed,
        asset_key=asset_key,
        check_name=check_name,
        severity=severity,
        metadata=metadata,
        description=report.describe(),
    )
