"""Mapping data-plane quality reports onto Dagster asset check results."""

import json

import dagster as dg

from dataflare_platform.defs.metadata import safe_rows
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
        # Failing rows are samples of the data: masked like every preview.
        asset = asset_key.to_user_string() if asset_key is not None else None
        masked = {rule: safe_rows(rows, asset) for rule, rows in report.samples.items()}
        metadata["failing_samples"] = dg.MetadataValue.json(
            json.loads(json.dumps(masked, default=str))
        )
    return dg.AssetCheckResult(
        passed=report.passed,
        asset_key=asset_key,
        check_name=check_name,
        severity=severity,
        metadata=metadata,
        description=report.describe(),
    )
