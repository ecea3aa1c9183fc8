"""Great Expectations suites as Dagster asset checks.

A check reads the asset's rows where its governance file says they are, runs the suite
with GX 1.x (imported only when a check runs) and reports each failing expectation with
its failing values. Blocking checks of error severity stop downstream assets of the same
run: a table that failed its expectations is not built upon.
"""

from dataclasses import replace

import dagster as dg

from dataflare_platform.compliance.datasets import DatasetRef, read_dataset
from dataflare_platform.compliance.expectations import (
    ExpectationOutcome,
    SuiteResult,
    SuiteSpec,
    run_suite,
)
from dataflare_platform.defs.governance.checks import no_data_result
from dataflare_platform.defs.metadata import safe_values
from dataflare_platform.defs.pools import dataset_tags
from dataflare_platform.defs.resources import ProjectHomeResource


def _masked(outcome: ExpectationOutcome, asset: str | None) -> ExpectationOutcome:
    """The outcome with its failing values (and a textual observed value) masked as the
    dataset's PII classification says: check metadata is shown to every viewer."""
    observed = outcome.observed_value
    if isinstance(observed, str):
        (observed,) = safe_values([observed], asset, outcome.column)
    return replace(
        outcome,
        sample=safe_values(list(outcome.sample), asset, outcome.column),
        observed_value=observed,
    )


def suite_check_result(
    result: SuiteResult, ref: DatasetRef, asset: str | None = None
) -> dg.AssetCheckResult:
    """``asset`` ("/"-separated key) picks the PII classification failing values are
    masked by; None masks them as unclassified data (every string)."""
    failed = [_masked(outcome, asset) for outcome in result.failed]
    severity = (
        dg.AssetCheckSeverity.ERROR if result.severity != "warn" else dg.AssetCheckSeverity.WARN
    )
    metadata: dict[str, object] = {
        "rows_checked": result.rows,
        "expectations": len(result.outcomes),
        "failed_expectations": len(failed),
        "dataset": ref.describe(),
    }
    for outcome in failed:
        name = f"{outcome.type}" + (f"[{outcome.column}]" if outcome.column else "")
        metadata[f"failed/{name}"] = dg.MetadataValue.json(
            {
                "severity": outcome.severity,
                "unexpected_count": outcome.unexpected_count,
                "unexpected_percent": outcome.unexpected_percent,
                "sample": outcome.sample,
                "observed_value": outcome.observed_value,
                "error": outcome.error,
            }
        )
    description = (
        "; ".join(o.describe() for o in failed)
        if failed
        else f"all {len(result.outcomes)} expectations met on {result.rows} rows"
    )
    return dg.AssetCheckResult(
        passed=not failed,
        severity=severity,
        metadata=metadata,
        description=description[:2000],
    )


def expectation_check(
    key: dg.AssetKey, suite: SuiteSpec, ref: DatasetRef
) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=key,
        name=f"gx_{suite.name}",
        op_tags=dataset_tags(ref),
        blocking=suite.blocking,
        description=(
            f"Great Expectations suite {suite.name!r}: "
            + ", ".join(e.type + (f"({e.column})" if e.column else "") for e in suite.expectations)
        ),
    )
    def _check(dataflare: ProjectHomeResource) -> dg.AssetCheckResult:
        try:
            frame = read_dataset(ref, dataflare.home.root)
        except FileNotFoundError as err:
            return no_data_result(ref, err)
        return suite_check_result(run_suite(frame, suite), ref, key.to_user_string())

    return _check
